"""A private PgBouncer in transaction mode, on a free port, in front of one PostgreSQL.

For tests and benchmarks of DATABASE_PGBOUNCER: `private_pgbouncer(...)` writes an ini and a
user list into a temporary directory and runs Debian's `pgbouncer` binary (installed by
scripts/ensure_services.sh) as the `postgres` user when run as root, since PgBouncer refuses
to run as root. Nothing of the machine's own PgBouncer setup is used or touched.
"""

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from chaos.services import ServiceError, _wait_for_port, free_port


def _binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        raise ServiceError("pgbouncer is not installed (scripts/ensure_services.sh pgbouncer)")
    return found


class PrivatePgBouncer:
    """One pgbouncer process pooling connections to one PostgreSQL server."""

    def __init__(
        self,
        directory: Path,
        *,
        server_host: str,
        server_port: int,
        user: str,
        password: str = "",
        pool_size: int = 4,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.user = user
        self.password = password
        server_password = f" password={password}" if password else ""
        # `*`: any database name the client asks for, on the same server; one pool per database
        # and user, of `pool_size` server connections shared by every client transaction.
        (directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server_host} port={server_port} user={user}{server_password}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {directory / 'userlist.txt'}\n"
            f"admin_users = {user}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            f"logfile = {directory / 'pgbouncer.log'}\n"
            f"pidfile = {directory / 'pgbouncer.pid'}\n"
        )
        (directory / "userlist.txt").write_text(f'"{user}" "{password}"\n')
        self.process: subprocess.Popen | None = None

    def url(self, database: str) -> str:
        """postgres:// URL of a database through this pgbouncer."""
        credentials = quote(self.user)
        if self.password:
            credentials += f":{quote(self.password)}"
        return f"postgres://{credentials}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start pgbouncer and wait until it listens."""
        as_user = {}
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            for path in self.directory.iterdir():
                shutil.chown(path, "postgres", "postgres")
            # Our own child (not runuser's), so that stop() signals and reaps it.
            as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
        self.process = subprocess.Popen(
            [_binary(), str(self.directory / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **as_user,
        )
        try:
            _wait_for_port(self.port, timeout=10)
        except ServiceError:
            raise ServiceError(f"pgbouncer did not start: {self.log()[-2000:]}") from None

    def admin(self, command: str) -> list[list[str]]:
        """Rows of an admin console command (`SHOW STATS`, ...), through psql: the console
        speaks only the simple query protocol."""
        env = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-At", "-F",
             "\t", "-c", command, "pgbouncer"],
            capture_output=True, text=True, env=env, check=False, timeout=30,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(f"pgbouncer {command!r} failed: {result.stderr.strip()}")
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    def log(self) -> str:
        """What pgbouncer wrote to its log file."""
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop pgbouncer at once (SIGTERM) and wait for its port to close."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        _wait_for_port(self.port, timeout=10, up=False)


@contextmanager
def private_pgbouncer(
    *, server_host: str, server_port: int, user: str, password: str = "", pool_size: int = 4
) -> Iterator[PrivatePgBouncer]:
    """A running pgbouncer in transaction mode; stopped and removed on the way out."""
    directory = Path(tempfile.mkdtemp(prefix="mailqueue-pgbouncer-"))
    bouncer = PrivatePgBouncer(
        directory,
        server_host=server_host,
        server_port=server_port,
        user=user,
        password=password,
        pool_size=pool_size,
    )
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(directory, ignore_errors=True)
