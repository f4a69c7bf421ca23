"""`manage.py mailqueue_purge [--dry-run]`: run the daily housekeeping once (the scheduler also
runs it daily): old one-time codes and handled-event records, and the retention settings."""

from django.core.management.base import BaseCommand

from mailqueue.services.housekeeping import housekeeping_run


class Command(BaseCommand):
    """Run the housekeeping of services/housekeeping.py once and print its counts."""

    help = (
        "Delete old one-time codes and handled-event records, and apply the retention settings "
        "(drop old email content, delete old finished emails), in bounded batches."
    )

    def add_arguments(self, parser) -> None:
        """--dry-run counts what would go, changing nothing."""
        parser.add_argument("--dry-run", action="store_true", help="Count only; change nothing.")

    def handle(self, *args, **options) -> None:
        self.stdout.write(str(housekeeping_run(dry_run=options["dry_run"])))
