"""The Mailqueue processes of a chaos run: gunicorn, workers and schedulers, each logging to a
file of its own (one per process incarnation, named after its pid), on private servers.

Workers and schedulers are `manage.py rqworker high default low` and `manage.py rqscheduler`,
as docker/entrypoint.sh runs them; the web side is gunicorn on config.wsgi, as the image runs it.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaos.services import PrivatePostgres, PrivateRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)
GUNICORN = PYTHON.parent / "gunicorn"
# Variables of the caller's shell that would change what the Mailqueue processes do.
_FOREIGN_PREFIXES = ("ANYMAIL_", "MAILQUEUE_", "EMAIL_", "DATABASE_", "REDIS_", "DJANGO_")


@dataclass(frozen=True)
class Tuning:
    """The Mailqueue options a chaos run sets (short leases and sweeps, so it drains in seconds)."""

    lease_seconds: int = 10
    sweep_interval_seconds: float = 1.0
    sweep_grace_seconds: float = 2.0
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 4.0
    max_attempts: int = 10
    worker_concurrency: int = 8
    chunk_size: int = 100
    web_workers: int = 3
    # How long a provider's open circuit stays open: short like the lease, so that a circuit
    # opened during the faults (an early breaker counted the 451 deferrals) costs seconds.
    provider_cooldown_seconds: float = 2.0


def mailqueue_env(*, database_url: str, redis_url: str, smtp_port: int, tuning: Tuning) -> dict:
    """Environment of every Mailqueue process of the run: production settings, private servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY="chaos",
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        EMAIL_PROVIDERS="smtp",
        EMAIL_URL=f"smtp://127.0.0.1:{smtp_port}",
        EMAIL_TIMEOUT="10",
        DEFAULT_FROM_EMAIL="Chaos <chaos@example.com>",
        MAILQUEUE_PUBLIC_URL="http://127.0.0.1",
        MAILQUEUE_LEASE_SECONDS=str(tuning.lease_seconds),
        MAILQUEUE_SWEEP_INTERVAL_SECONDS=str(tuning.sweep_interval_seconds),
        MAILQUEUE_SWEEP_GRACE_SECONDS=str(tuning.sweep_grace_seconds),
        MAILQUEUE_RETRY_BASE_SECONDS=str(tuning.retry_base_seconds),
        MAILQUEUE_RETRY_MAX_SECONDS=str(tuning.retry_max_seconds),
        MAILQUEUE_MAX_ATTEMPTS=str(tuning.max_attempts),
        MAILQUEUE_WORKER_CONCURRENCY=str(tuning.worker_concurrency),
        MAILQUEUE_BATCH_CHUNK_SIZE=str(tuning.chunk_size),
        MAILQUEUE_PROVIDER_COOLDOWN_SECONDS=str(tuning.provider_cooldown_seconds),
    )
    return env


def manage(args: list[str], *, env: dict, log: Path) -> str:
    """Run a manage.py command to completion; its standard output (stderr goes to the log)."""
    with log.open("ab") as err:
        result = subprocess.run(
            [str(PYTHON), "manage.py", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            check=False,
        )
    if result.returncode:
        raise RuntimeError(f"manage.py {args[0]} exited with {result.returncode}; see {log}")
    return result.stdout.decode()


@dataclass
class Incarnation:
    """One process of a role's slot, from start to its end (killed, or stopped at the end)."""

    role: str
    slot: int
    process: subprocess.Popen
    log: Path
    started_at: float
    killed_at: float | None = None


@dataclass
class Kill:
    """A SIGKILL the scenario sent."""

    at: float
    role: str
    slot: int
    pid: int
    reason: str


@dataclass
class Cluster:
    """The web server, the workers and the schedulers of a run, killed and restarted on demand."""

    env: dict
    log_dir: Path
    workers: int = 4
    schedulers: int = 2
    web_workers: int = 3
    # How long a provider's open circuit stays open: short like the lease, so that a circuit
    # opened during the faults (an early breaker counted the 451 deferrals) costs seconds.
    provider_cooldown_seconds: float = 2.0
    web_port: int = field(default_factory=free_port)
    incarnations: list[Incarnation] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    current: dict[tuple[str, int], Incarnation] = field(default_factory=dict)
    web: subprocess.Popen | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        """http:// URL of the web server."""
        return f"http://127.0.0.1:{self.web_port}"

    def _command(self, role: str) -> list[str]:
        if role == "worker":
            return [str(PYTHON), "manage.py", "rqworker", "high", "default", "low"]
        return [str(PYTHON), "manage.py", "rqscheduler"]

    def start(self, role: str, slot: int) -> Incarnation:
        """Start (again) the process of one slot of a role, with a log file of its own."""
        with self._lock:
            number = sum(1 for i in self.incarnations if (i.role, i.slot) == (role, slot))
            pending = self.log_dir / f"{role}-{slot}-{number}.log"
            with pending.open("wb") as out:
                process = subprocess.Popen(
                    self._command(role),
                    cwd=ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            log = self.log_dir / f"{role}-{slot}-{number}-{process.pid}.log"
            pending.rename(log)
            incarnation = Incarnation(role, slot, process, log, time.time())
            self.incarnations.append(incarnation)
            self.current[(role, slot)] = incarnation
            return incarnation

    def start_all(self) -> None:
        """Start the web server, the workers and the schedulers."""
        self.web = subprocess.Popen(
            [
                str(GUNICORN),
                "config.wsgi:application",
                "--bind", f"127.0.0.1:{self.web_port}",
                "--workers", str(self.web_workers),
                "--timeout", "60",
                "--graceful-timeout", "30",
            ],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=(self.log_dir / "web.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        for slot in range(self.workers):
            self.start("worker", slot)
        for slot in range(self.schedulers):
            self.start("scheduler", slot)

    def kill(self, role: str, slot: int, *, reason: str) -> Kill | None:
        """SIGKILL the process of a slot (and wait for it) unless it is already gone."""
        with self._lock:
            incarnation = self.current.get((role, slot))
        if incarnation is None or incarnation.process.poll() is not None:
            return None
        at = time.time()
        incarnation.process.send_signal(signal.SIGKILL)
        incarnation.process.wait()
        incarnation.killed_at = at
        kill = Kill(at=at, role=role, slot=slot, pid=incarnation.process.pid, reason=reason)
        with self._lock:
            self.kills.append(kill)
        return kill

    def restart(self, role: str, slot: int, *, reason: str) -> Kill | None:
        """SIGKILL a slot's process and start a new one at once."""
        kill = self.kill(role, slot, reason=reason)
        self.start(role, slot)
        return kill

    def worker_pids(self) -> list[int]:
        """The worker processes alive now (for the SMTP sink's attribution)."""
        with self._lock:
            return [
                i.process.pid
                for (role, _), i in self.current.items()
                if role == "worker" and i.process.poll() is None
            ]

    def exited_on_their_own(self) -> list[Incarnation]:
        """Processes that ended without being killed by the scenario (a crash)."""
        with self._lock:
            return [
                i for i in self.incarnations if i.killed_at is None and i.process.poll() is not None
            ]

    def stop_all(self) -> None:
        """SIGTERM everything still running, then SIGKILL what has not stopped within 10 s."""
        processes = [i.process for i in self.incarnations]
        if self.web is not None:
            processes.append(self.web)
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass
class Servers:
    """The private PostgreSQL and Redis of a run, with the times each was unavailable."""

    postgres: PrivatePostgres
    redis: PrivateRedis
    outages: list[tuple[str, float, float]] = field(default_factory=list)

    def restart_postgres(self, *, down_seconds: float) -> None:
        """Stop PostgreSQL (fast: clients disconnected), stay down, start again."""
        began = time.time()
        self.postgres.restart(down_seconds=down_seconds)
        self.outages.append(("postgres_restart", began, time.time()))

    def restart_redis(self, *, down_seconds: float) -> None:
        """Kill Redis (it comes back empty), stay down, start again."""
        began = time.time()
        self.redis.restart(down_seconds=down_seconds)
        self.outages.append(("redis_restart", began, time.time()))

    def flush_redis(self) -> None:
        """FLUSHALL: every queue, scheduled job, marker and worker registration is gone."""
        began = time.time()
        self.redis.flush()
        self.outages.append(("redis_flush", began, time.time()))
