"""The bare DRF peer: bench/peers/bare_drf under gunicorn, the same way as Mailqueue's web."""

import os
import subprocess
from pathlib import Path

from bench.lib import database, procs

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "bare_drf"
ROOT = HERE.parent.parent
# The project's virtualenv on purpose: same Django, DRF, psycopg and gunicorn as Mailqueue.
PYTHON = ROOT / ".venv" / "bin" / "python"
DATABASE_URL = os.environ.get(
    "BENCH_BARE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bare_drf_bench"
)


def env() -> dict[str, str]:
    """Environment of the peer's processes."""
    return {
        **os.environ,
        "BENCH_BARE_DATABASE_URL": DATABASE_URL,
        "DJANGO_SETTINGS_MODULE": "bare_project.settings",
    }


def recreate_database(*, log: Path) -> None:
    """Drop and create the peer's scratch database, then migrate it."""
    database.recreate(DATABASE_URL)
    procs.run([PYTHON, "manage.py", "migrate", "--no-input"], env=env(), log=log, cwd=PROJECT)


def reset() -> None:
    """Empty the peer's table."""
    database.truncate_all(DATABASE_URL)


def start_web(*, port: int, workers: int, log: Path) -> subprocess.Popen:
    """Start gunicorn with the same options as Mailqueue's web."""
    return procs.start_gunicorn(
        "bare_project.wsgi:application", port=port, workers=workers, env=env(), log=log, cwd=PROJECT
    )
