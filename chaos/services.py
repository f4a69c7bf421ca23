"""Private PostgreSQL and Redis servers on their own ports, for scenarios that stop them.

The chaos scenarios restart, flush and kill the servers Mailqueue depends on. Doing that to the
machine's shared servers would break every other test run and checkout, so each scenario (and
each short version of it in `make test`) starts its own: `redis-server` on a free port and a
PostgreSQL cluster made by `initdb` in a temporary directory. Both keep nothing on disk beyond
that directory, which is removed on the way out.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import redis


class ServiceError(RuntimeError):
    """A private server could not be started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, *, timeout: float, up: bool = True) -> None:
    """Wait until something listens on the port (or, with up=False, nothing does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
            probe.settimeout(0.2)
            listening = probe.connect_ex(("127.0.0.1", port)) == 0
        if listening == up:
            return
        time.sleep(0.05)
    raise ServiceError(f"port {port} still {'closed' if up else 'open'} after {timeout} s")


class PrivateRedis:
    """One `redis-server` process that keeps nothing on disk; restarting it empties it."""

    def __init__(self, directory: Path, *, port: int | None = None, extra: list[str] = ()) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra = list(extra)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """redis:// URL of DB 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed (scripts/ensure_services.sh redis)")
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        _wait_for_port(self.port, timeout=10)

    def stop(self) -> None:
        """Kill the server (its data goes with it) and wait for the port to close."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        _wait_for_port(self.port, timeout=10, up=False)

    def restart(self, *, down_seconds: float = 0) -> None:
        """Stop, stay down for a while, start again empty."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def flush(self) -> None:
        """Empty every DB of the running server."""
        redis.Redis.from_url(self.url).flushall()


class PrivatePostgres:
    """A PostgreSQL cluster of its own (`initdb` in a temporary directory) on its own port."""

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = port or free_port()
        self.bindir = _postgres_bindir()

    def url(self, database: str = "postgres") -> str:
        """postgres:// URL of one database of this cluster (user postgres, trust auth)."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a PostgreSQL program as the `postgres` user (initdb refuses root)."""
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise ServiceError(f"{args[0]} failed: {result.stderr.strip() or result.stdout}")
        return result

    def init(self) -> None:
        """Make the cluster: trust auth on 127.0.0.1 only, no fsync (nothing here outlives it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.directory}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "pg.log"), "-w",
                  "-t", "60", "start")  # fmt: skip

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (`fast` disconnects clients; `immediate` is a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, *, down_seconds: float = 0, mode: str = "fast") -> None:
        """Stop, stay down for a while, start again (the data stays)."""
        self.stop(mode=mode)
        time.sleep(down_seconds)
        self.start()

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)


def _postgres_bindir() -> Path:
    """The directory of initdb and pg_ctl (Debian keeps them out of PATH)."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found is None:
        raise ServiceError("PostgreSQL's initdb is not installed (scripts/ensure_services.sh)")
    return Path(found).resolve().parent


@contextmanager
def private_redis(*, extra: list[str] = ()) -> Iterator[PrivateRedis]:
    """A running private Redis, killed and removed on the way out."""
    directory = Path(tempfile.mkdtemp(prefix="mailqueue-redis-"))
    server = PrivateRedis(directory, extra=extra)
    try:
        server.start()
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL cluster, stopped and removed on the way out."""
    directory = Path(tempfile.mkdtemp(prefix="mailqueue-pg-"))
    server = PrivatePostgres(directory)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server._run("pg_ctl", "-D", str(server.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(directory, ignore_errors=True)
