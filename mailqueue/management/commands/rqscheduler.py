"""`manage.py rqscheduler`: releases scheduled sends and retries on time, and runs the sweeper.

Overrides django-rq's command: it polls every half second (django-rq's default is 60 s) and
compares exact times, so scheduled emails leave well within a second of `send_at`.
"""

from django.core.management.base import BaseCommand
from rq_scheduler.utils import setup_loghandlers

from mailqueue.scheduling import get_scheduler


class Command(BaseCommand):
    """Run rq-scheduler, polling every half second, and the sweeper."""

    help = "Run the scheduler: delayed sends, retries with backoff, and the stuck-email sweeper."

    def add_arguments(self, parser) -> None:
        """--interval, --burst, --pid (and django-rq's --queue, ignored)."""
        parser.add_argument(
            "--interval",
            "-i",
            type=float,
            default=0.5,
            help="Seconds between polls (default 0.5).",
        )
        parser.add_argument("--burst", action="store_true", help="Run one pass and exit.")
        parser.add_argument("--pid", default=None, help="Write the process id to this file.")
        parser.add_argument("--queue", default="default", help="Ignored; kept for compatibility.")
        parser.add_argument("args", nargs="*")

    def handle(self, *args, interval: float, burst: bool, pid: str | None, **options) -> None:
        """Run the scheduler loop until SIGTERM or SIGINT (see mailqueue/scheduler.py)."""
        if pid:
            with open(pid, "w") as handle:
                handle.write(str(__import__("os").getpid()))
        setup_loghandlers("DEBUG" if options["verbosity"] >= 2 else "INFO")
        get_scheduler(interval=interval).run(burst=burst)
