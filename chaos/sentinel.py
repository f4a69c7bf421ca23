"""A private Redis Sentinel setup: a master, a replica and one sentinel, on free ports.

For tests of REDIS_SENTINELS: `sentinel_group(...)` starts a password-protected master, a
replica of it and `redis-server sentinel.conf --sentinel` watching them (quorum 1), and waits
until the sentinel knows the replica, so that `SENTINEL FAILOVER` can promote it at once.
With `tls=True` all three speak only TLS (certificates from chaos/tls.py), to each other too.
"""

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from chaos.services import PrivateRedis, ServiceError, _wait_for_port, free_port
from chaos.tls import Certificates, certificates_make, tls_server_arguments


def _client_tls(certificates: Certificates | None) -> dict:
    """redis-py options to reach a server of the group (TLS trusting the test CA, or none)."""
    if certificates is None:
        return {}
    return {"ssl": True, "ssl_ca_certs": str(certificates.ca)}


class PrivateSentinel:
    """One `redis-server --sentinel` process watching one service."""

    def __init__(
        self,
        directory: Path,
        *,
        service: str,
        master_port: int,
        master_password: str,
        password: str,
        certificates: Certificates | None = None,
        down_after_ms: int = 1000,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.service = service
        self.password = password
        self.certificates = certificates
        self.config = directory / "sentinel.conf"
        if certificates is None:
            listen = f"port {self.port}\n"
        else:
            # TLS only, to clients and (tls-replication) to the servers it watches.
            options = [*tls_server_arguments(certificates), "--tls-replication", "yes"]
            listen = f"port 0\ntls-port {self.port}\n" + "".join(
                f"{name.removeprefix('--')} {value}\n"
                for name, value in zip(options[::2], options[1::2], strict=True)
            )
        # Sentinel rewrites its config file (what it learns), so it must be its own, writable.
        self.config.write_text(
            f"{listen}bind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} 1\n"
            f"sentinel auth-pass {service} {master_password}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} 10000\n"
            + (f"requirepass {password}\n" if password else "")
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the sentinel and wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed (scripts/ensure_services.sh redis)")
        log = open(self.directory / "sentinel.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [binary, str(self.config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        _wait_for_port(self.port, timeout=10)

    def client(self) -> redis.Redis:
        """A client of the sentinel itself (SENTINEL commands)."""
        return redis.Redis(
            "127.0.0.1",
            self.port,
            password=self.password or None,
            decode_responses=True,
            **_client_tls(self.certificates),
        )

    def master_state(self) -> dict:
        """The sentinel's record of the master (`SENTINEL MASTERS`: port, flags), which is what
        redis-py's discovery reads."""
        return self.client().sentinel_masters()[self.service]

    def master_port(self) -> int:
        """The port of the master the sentinel names now (already the promoted replica's while
        a failover is still under way)."""
        # Raw command: redis-py's sentinel_get_master_addr_by_name fails on a plain client.
        _host, port = self.client().execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        )
        return int(port)

    def stop(self) -> None:
        """Kill the sentinel."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None


@dataclass
class SentinelGroup:
    """The servers of one Sentinel-managed service."""

    service: str
    password: str
    master: PrivateRedis
    replica: PrivateRedis
    sentinel: PrivateSentinel
    certificates: Certificates | None = None

    def client(self, server: PrivateRedis, **options) -> redis.Redis:
        """A client of one data server (its password, TLS if the group uses it)."""
        return redis.Redis(
            "127.0.0.1",
            server.port,
            password=self.password,
            **_client_tls(self.certificates),
            **options,
        )

    def server_on(self, port: int) -> PrivateRedis:
        """The data server listening on this port."""
        return self.master if port == self.master.port else self.replica

    def role(self, server: PrivateRedis) -> str:
        """`master` or `slave`, as the server itself says."""
        return self.client(server).info("replication")["role"]

    def _wait_for_new_master(self, old_port: int, *, demoted: bool, timeout: float) -> PrivateRedis:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Done when clients can find the new master: redis-py reads SENTINEL MASTERS and
            # refuses a master flagged down, which the old one is until the failover ends.
            state = self.sentinel.master_state()
            port = int(state["port"])
            healthy = not (state["is_sdown"] or state["is_odown"])
            promoted = port != old_port and healthy and self.role(self.server_on(port)) == "master"
            if promoted and (not demoted or self.role(self.server_on(old_port)) == "slave"):
                return self.server_on(port)
            time.sleep(0.1)
        raise ServiceError(f"no failover of {self.service} within {timeout} s")

    def failover(self, *, timeout: float = 30) -> PrivateRedis:
        """`SENTINEL FAILOVER` (planned maintenance), then wait until the replica is master and
        the old master its replica; return the new master.

        The old master stays a writable master until the sentinel's next look at it (up to ten
        seconds): clients still connected to it write there until it is turned into a replica
        and drops them.
        """
        old_port = self.sentinel.master_port()
        self.sentinel.client().execute_command("SENTINEL", "FAILOVER", self.service)
        return self._wait_for_new_master(old_port, demoted=True, timeout=timeout)

    def master_kill(self, *, timeout: float = 30) -> PrivateRedis:
        """Kill the master (a crash) and wait until the sentinel has promoted the replica."""
        old_port = self.sentinel.master_port()
        self.server_on(old_port).stop()
        return self._wait_for_new_master(old_port, demoted=False, timeout=timeout)


def _wait_for_sync(client: redis.Redis, *, timeout: float) -> None:
    """Until the replica (this client's server) has its master's data and follows it."""
    deadline = time.monotonic() + timeout
    while client.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            raise ServiceError(f"the replica did not sync within {timeout} s")
        time.sleep(0.05)


def _wait_for_replica(group: SentinelGroup, *, timeout: float) -> None:
    """Until the replica is in sync and the sentinel lists it as a healthy replica."""
    deadline = time.monotonic() + timeout
    replica = group.client(group.replica)
    sentinel = group.sentinel.client()
    while time.monotonic() < deadline:
        link_up = replica.info("replication").get("master_link_status") == "up"
        known = [
            entry
            for entry in sentinel.sentinel_slaves(group.service)
            if int(entry["port"]) == group.replica.port
            and "s_down" not in entry["flags"]
            and "disconnected" not in entry["flags"]
        ]
        if link_up and known:
            return
        time.sleep(0.1)
    raise ServiceError(f"the sentinel did not see the replica within {timeout} s")


@contextmanager
def sentinel_group(
    *, service: str = "mymaster", password: str, sentinel_password: str = "", tls: bool = False
) -> Iterator[SentinelGroup]:
    """A running master, replica and sentinel (all killed and removed on the way out).

    Master and replica want `password` (and use it with each other); the sentinel wants
    `sentinel_password` when it is not empty. With `tls`, every port speaks only TLS; the CA
    is `group.certificates.ca`.
    """
    directory = Path(tempfile.mkdtemp(prefix="mailqueue-sentinel-"))
    certificates = certificates_make(directory) if tls else None
    servers = []
    for name in ("master", "replica"):
        (directory / name).mkdir()
        port = free_port()
        extra = ["--requirepass", password, "--masterauth", password]
        if certificates is not None:
            # The last --port wins: the plain port is closed, the TLS one takes the free port.
            extra += ["--tls-port", str(port), "--port", "0", "--tls-replication", "yes"]
            extra += tls_server_arguments(certificates)
        servers.append(PrivateRedis(directory / name, port=port, extra=extra))
    master, replica = servers
    (directory / "sentinel").mkdir()
    sentinel = None
    try:
        master.start()
        replica.extra += ["--replicaof", "127.0.0.1", str(master.port)]
        replica.start()
        # In sync before the sentinel starts: its first look at the master lists the replica,
        # instead of its next one, ten seconds later.
        client_tls = _client_tls(certificates)
        _wait_for_sync(
            redis.Redis("127.0.0.1", replica.port, password=password, **client_tls), timeout=20
        )
        sentinel = PrivateSentinel(
            directory / "sentinel",
            service=service,
            master_port=master.port,
            master_password=password,
            password=sentinel_password,
            certificates=certificates,
        )
        sentinel.start()
        group = SentinelGroup(service, password, master, replica, sentinel, certificates)
        _wait_for_replica(group, timeout=20)
        yield group
    finally:
        if sentinel is not None:
            sentinel.stop()
        for server in (master, replica):
            if server.process is not None and server.process.poll() is None:
                server.process.send_signal(signal.SIGKILL)
                server.process.wait()
        shutil.rmtree(directory, ignore_errors=True)
