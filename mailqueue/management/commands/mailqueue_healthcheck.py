"""`manage.py mailqueue_healthcheck worker|scheduler|consumer|smtpd`: exit 0 if that process is
alive here.

For container health checks: healthy when a worker (or a `rqscheduler`, or a `consume_events`)
registered from this host still has its heartbeat key, which a killed process stops renewing;
the SMTP submission server is healthy when its port answers with a 220 greeting.
"""

import smtplib
import socket
import sys

from django.core.management.base import BaseCommand
from redis.exceptions import RedisError

from mailqueue import conf
from mailqueue.liveness import (
    live_consumer_count,
    live_scheduler_count,
    live_workers_on_host,
)
from mailqueue.scheduling import connection


class Command(BaseCommand):
    """Report whether a worker, a scheduler or an event consumer is alive on this host."""

    help = "Exit 0 if a live worker (or scheduler, or event consumer) runs on this host."

    def add_arguments(self, parser) -> None:
        """The role to check."""
        parser.add_argument("role", choices=["worker", "scheduler", "consumer", "smtpd"])

    def handle(self, *args, role: str, **options) -> None:
        """Print what was found; exit 1 when nothing is alive or Redis cannot be reached."""
        if role == "smtpd":
            self._check_smtpd()
            return
        try:
            if role == "worker":
                alive = live_workers_on_host(connection(), socket.gethostname())
            elif role == "scheduler":
                alive = live_scheduler_count(connection(), hostname=socket.gethostname())
            else:
                alive = live_consumer_count(connection(), hostname=socket.gethostname())
        except RedisError as exc:
            self.stderr.write(f"unhealthy: Redis unavailable: {exc}")
            sys.exit(1)
        if not alive:
            self.stderr.write(f"unhealthy: no live {role}")
            sys.exit(1)
        self.stdout.write(f"healthy: {alive} live {role}(s)")

    def _check_smtpd(self) -> None:
        """The submission server answers on its port with a 220 greeting."""
        try:
            with smtplib.SMTP("127.0.0.1", conf.smtpd_port(), timeout=5) as client:
                code, _ = client.noop()
        except (OSError, smtplib.SMTPException) as exc:
            self.stderr.write(f"unhealthy: SMTP submission server not answering: {exc}")
            sys.exit(1)
        if code != 250:
            self.stderr.write(f"unhealthy: SMTP submission server answered {code}")
            sys.exit(1)
        self.stdout.write("healthy: SMTP submission server answering")
