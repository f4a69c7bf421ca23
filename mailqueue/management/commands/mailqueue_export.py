"""`manage.py mailqueue_export ADDRESS`: everything stored about one address, as JSON (GDPR)."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from mailqueue.errors import ValidationFailed
from mailqueue.services.retention import recipient_data_export


class Command(BaseCommand):
    """Print one address's emails, attempts, events, captured messages and suppressions."""

    help = "Print as JSON everything stored about ADDRESS, across clients."

    def add_arguments(self, parser) -> None:
        """The address to export."""
        parser.add_argument("address")

    def handle(self, *args, **options) -> None:
        try:
            data = recipient_data_export(address=options["address"])
        except ValidationFailed as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, indent=2))
