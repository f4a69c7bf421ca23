"""`manage.py load_event_rules --client NAME`: install the rules shipped in
fixtures/event_rules.json for a client (the templates they name must be loaded)."""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from event_sends.models import EventRule
from event_sends.services import event_rule_create
from mailqueue.errors import MailqueueError
from mailqueue.models import Client


class Command(BaseCommand):
    """Create the shipped rules a client lacks; running it again changes nothing."""

    help = (
        "Install the event rules of fixtures/event_rules.json for a client (created if "
        "missing); a rule the client already has (same event type and template) is skipped."
    )

    def add_arguments(self, parser) -> None:
        """The client, and where the rules are."""
        parser.add_argument("--client", required=True, help="Name of the client.")
        parser.add_argument(
            "--file", default=str(Path(settings.BASE_DIR) / "fixtures" / "event_rules.json")
        )

    def handle(self, *args, client: str, file: str, **options) -> None:
        """Create the missing rules, all or none."""
        try:
            rules = json.loads(Path(file).read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read the rules in {file}: {exc}") from None
        created = 0
        with transaction.atomic():
            owner, new_client = Client.objects.get_or_create(name=client)
            for index, rule in enumerate(rules):
                exists = EventRule.objects.filter(
                    client=owner, event_type=rule.get("event_type"), template=rule.get("template")
                ).exists()
                if exists:
                    continue
                try:
                    event_rule_create(client=owner, **rule)
                except (MailqueueError, TypeError) as exc:
                    hint = " (run load_default_templates first?)" if "template" in str(exc) else ""
                    raise CommandError(f"Rule {index} of {file}: {exc}{hint}") from None
                created += 1
        if new_client:
            self.stdout.write(f"client {client} created")
        self.stdout.write(f"event rules: {created} created, {len(rules)} shipped")
