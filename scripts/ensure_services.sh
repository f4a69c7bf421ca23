#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1: start them, or install them with apt-get.
# Usage: scripts/ensure_services.sh [postgres] [redis] [pgbouncer] [swaks]
#        (default: postgres redis)
# `postgres` also installs PgBouncer's binary: the tests start their own on a free port.
set -euo pipefail

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(postgres redis)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq "$@" >/dev/null
}

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

ensure_redis() {
  redis_up && return 0
  if ! command -v redis-server >/dev/null; then
    echo "redis-server not found: installing it with apt-get" >&2
    apt_install redis-server
  fi
  echo "starting redis-server on 127.0.0.1:6379" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no >/dev/null
  for _ in $(seq 1 50); do redis_up && return 0; sleep 0.1; done
  echo "Redis did not come up on 127.0.0.1:6379" >&2
  return 1
}

ensure_postgres() {
  postgres_up && return 0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "PostgreSQL not found: installing it with apt-get" >&2
    apt_install postgresql postgresql-client
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    conf=/etc/postgresql/$version/main
    # Tests connect as postgres over TCP without a password, like CI's own server.
    as_root sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(host\s+all\s+all\s+::1\/128\s+)\S+/\1trust/; s/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$conf/pg_hba.conf"
    # apt may have started the cluster already (systemd machines): make it read the new rules.
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
  fi
  echo "starting PostgreSQL" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  for _ in $(seq 1 100); do postgres_up && return 0; sleep 0.2; done
  echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
  return 1
}

# Only the binary: tests/test_pgbouncer.py starts its own pgbouncer on a free port with a generated
# ini. A system pgbouncer on the fixed port 6432 would be one more shared server nobody uses, so
# the one Debian's package may start is stopped and kept from starting at boot.
ensure_pgbouncer() {
  if [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null; then return 0; fi
  echo "pgbouncer not found: installing Debian's pgbouncer package with apt-get" >&2
  apt_install pgbouncer
  as_root systemctl disable --now pgbouncer >/dev/null 2>&1 || true
  as_root /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
}

# swaks, the outside SMTP client the SMTP submission tests send with (tests/mailqueue/test_smtpd.py).
ensure_swaks() {
  command -v swaks >/dev/null && return 0
  echo "swaks not found: installing Debian's swaks package with apt-get" >&2
  apt_install swaks
}

for service in "${want[@]}"; do
  case "$service" in
    redis) ensure_redis ;;
    postgres) ensure_postgres; ensure_pgbouncer ;;
    pgbouncer) ensure_pgbouncer ;;
    swaks) ensure_swaks ;;
    *) echo "unknown service: $service" >&2; exit 2 ;;
  esac
done
