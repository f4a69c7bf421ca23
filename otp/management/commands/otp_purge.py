"""`manage.py otp_purge`: delete one-time codes older than MAILQUEUE_OTP_KEEP_HOURS."""

from django.core.management.base import BaseCommand

from otp.services import codes_purge


class Command(BaseCommand):
    """Delete old one-time code rows (their hashes, attempts and timestamps)."""

    help = "Delete one-time codes issued more than MAILQUEUE_OTP_KEEP_HOURS ago."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"one-time codes deleted: {codes_purge()}")
