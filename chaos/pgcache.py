"""A private PostgreSQL cluster that starts already migrated, copied from a cached template.

Migrating an empty database takes 10-20 s on a busy machine: most of the short chaos test's
budget. The first run migrates a cluster of its own (`initdb` in a temporary directory, as
chaos/services.py does), stops it, and keeps its data directory under the system's temporary
directory, keyed by a hash of every migration file and of pyproject.toml (the pinned
dependencies, whose apps have migrations too). Each run then copies that directory into a new
temporary directory and starts the copy on a port of its own: a cluster of its own that no
other run shares, ready in a second.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from chaos.services import PrivatePostgres, free_port

ROOT = Path(__file__).resolve().parent.parent
CACHE_ROOT = Path(tempfile.gettempdir()) / "mailqueue-chaos-pgcache"
DATABASE = "mailqueue"


def schema_key() -> str:
    """A hash of what decides the migrated schema: migration files and pinned dependencies."""
    digest = hashlib.sha256()
    files = [*sorted(ROOT.glob("*/migrations/*.py")), ROOT / "pyproject.toml"]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _chown_postgres(path: Path) -> None:
    """Give a directory tree to the `postgres` user when running as root (initdb refuses root)."""
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)


def _build(key: str, prepare: Callable[[str], str]) -> Path:
    """Migrate a fresh cluster with `prepare(database_url) -> api_key` and keep it stopped."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{key}-building-", dir=CACHE_ROOT))
    server = PrivatePostgres(building)
    try:
        server.init()
        server.start()
        api_key = prepare(server.create_database(DATABASE))
        server.stop()
        (building / "api_key").write_text(api_key)
        final = CACHE_ROOT / key
        try:
            building.rename(final)  # atomic: a run racing us keeps whichever came first
        except OSError:
            shutil.rmtree(building, ignore_errors=True)
        return final
    except BaseException:
        server._run("pg_ctl", "-D", str(server.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(building, ignore_errors=True)
        raise


@contextmanager
def migrated_postgres(
    prepare: Callable[[str], str], timings: dict | None = None
) -> Iterator[tuple[PrivatePostgres, str, str]]:
    """A running private cluster whose `mailqueue` database is migrated and prepared: the
    server, the database's URL and the API key `prepare` made; removed on the way out.

    `timings["database_cache_built"]` gets the seconds spent building the cache (0: reused).
    """
    key = schema_key()
    cached = CACHE_ROOT / key
    began = time.monotonic()
    if not (cached / "api_key").exists():
        cached = _build(key, prepare)
    if timings is not None:
        timings["database_cache_built"] = round(time.monotonic() - began, 1)
    directory = Path(tempfile.mkdtemp(prefix="mailqueue-pg-"))
    shutil.copytree(cached / "data", directory / "data", symlinks=True)
    _chown_postgres(directory)
    (directory / "data").chmod(0o700)
    server = PrivatePostgres(directory, port=free_port())
    # Later lines win: the copy listens on its own port and socket directory.
    with open(server.data / "postgresql.conf", "a") as conf:
        conf.write(f"port = {server.port}\nunix_socket_directories = '{directory}'\n")
    (server.data / "postmaster.pid").unlink(missing_ok=True)
    try:
        server.start()
        yield server, server.url(DATABASE), (cached / "api_key").read_text().strip()
    finally:
        server._run("pg_ctl", "-D", str(server.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(directory, ignore_errors=True)
