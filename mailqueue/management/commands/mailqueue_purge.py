"""`manage.py mailqueue_purge [--dry-run]`: apply the retention settings once (the scheduler
also does it daily)."""

from django.core.management.base import BaseCommand

from mailqueue.services.retention import retention_purge


class Command(BaseCommand):
    """Apply MAILQUEUE_RETENTION_CONTENT_DAYS and MAILQUEUE_RETENTION_DAYS once."""

    help = "Drop old email content and delete old finished emails, in bounded batches."

    def add_arguments(self, parser) -> None:
        """--dry-run counts what would go, changing nothing."""
        parser.add_argument("--dry-run", action="store_true", help="Count only; change nothing.")

    def handle(self, *args, **options) -> None:
        self.stdout.write(str(retention_purge(dry_run=options["dry_run"])))
