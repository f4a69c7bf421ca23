"""`manage.py smtpd`: the SMTP submission server for tools that can only send over SMTP."""

import asyncio
import signal

from django.core.management.base import BaseCommand

from mailqueue import conf
from mailqueue.smtpd.server import serve


class Command(BaseCommand):
    """Run the SMTP submission server until SIGTERM or SIGINT."""

    help = (
        "Accept messages over SMTP (AUTH PLAIN/LOGIN with an API key of scope send as the "
        "password) and store each as an email of the key's client. SIGTERM/SIGINT: stop "
        "accepting connections, let open sessions finish, exit 0."
    )

    def add_arguments(self, parser) -> None:
        """--host and --port override MAILQUEUE_SMTPD_HOST and MAILQUEUE_SMTPD_PORT."""
        parser.add_argument("--host", default=None, help="Listen address (MAILQUEUE_SMTPD_HOST).")
        parser.add_argument("--port", type=int, default=None, help="Port (MAILQUEUE_SMTPD_PORT).")

    def handle(self, *args, host: str | None, port: int | None, **options) -> None:
        """Serve until a stop signal."""
        host = host or conf.smtpd_host()
        port = conf.smtpd_port() if port is None else port
        asyncio.run(self._serve(host, port))

    async def _serve(self, host: str, port: int) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        def ready(bound: int) -> None:
            self.stdout.write(f"SMTP submission server listening on {host}:{bound}", ending="\n")
            self.stdout.flush()

        await serve(host=host, port=port, stop=stop, ready=ready)
