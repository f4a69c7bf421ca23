"""`manage.py mailqueue_sweep`: one sweeper pass (the scheduler also runs it continuously)."""

from django.core.management.base import BaseCommand

from mailqueue.services import emails_sweep


class Command(BaseCommand):
    """Run one sweeper pass."""

    help = "Re-enqueue emails whose job Redis lost and take back expired sending leases, once."

    def handle(self, *args, **options) -> None:
        self.stdout.write(str(emails_sweep()))
