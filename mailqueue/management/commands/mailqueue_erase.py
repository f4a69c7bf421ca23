"""`manage.py mailqueue_erase ADDRESS`: erase everything stored about one address (GDPR)."""

from django.core.management.base import BaseCommand, CommandError

from mailqueue.errors import ValidationFailed
from mailqueue.services.retention import recipient_data_erase


class Command(BaseCommand):
    """Erase one address's emails, events and captured messages; hash its suppressions."""

    help = "Delete every email, event and captured message naming ADDRESS (it stays suppressed)."

    def add_arguments(self, parser) -> None:
        """The address to erase."""
        parser.add_argument("address")

    def handle(self, *args, **options) -> None:
        try:
            result = recipient_data_erase(address=options["address"])
        except ValidationFailed as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(str(result))
