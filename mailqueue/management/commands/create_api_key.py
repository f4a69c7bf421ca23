"""`manage.py create_api_key CLIENT --scope send --scope read [--all-clients] [--test]`: prints
the new key last."""

from django.core.management.base import BaseCommand, CommandError

from mailqueue.errors import ValidationFailed
from mailqueue.services import api_key_create
from mailqueue.services.api_keys import ALL_SCOPES


class Command(BaseCommand):
    """Create an API key for a client and print it once."""

    help = "Create an API key for a client (created if needed). The key is shown only once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("client", help="Client name, e.g. billing-service")
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            choices=ALL_SCOPES,
            help="Scope to grant; repeat for several (default: send and read).",
        )
        parser.add_argument("--name", default="", help="A label for this key.")
        parser.add_argument(
            "--all-clients",
            action="store_true",
            help="Operators only: the failed-email endpoints act on every client's emails.",
        )
        parser.add_argument(
            "--test",
            action="store_true",
            help="A test key: its emails go through the whole pipeline to the capture inbox, "
            "never to a provider; simulator addresses (bounce@simulator.mailqueue, ...) produce "
            "their events.",
        )

    def handle(
        self,
        *args,
        client: str,
        scopes: list[str] | None,
        name: str,
        all_clients: bool,
        test: bool,
        **options,
    ) -> None:
        try:
            issued = api_key_create(
                client_name=client,
                scopes=scopes or ["send", "read"],
                name=name,
                all_clients=all_clients,
                is_test=test,
            )
        except ValidationFailed as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Created key mq_{issued.api_key.prefix}_… for client '{client}' with scopes "
            f"{', '.join(issued.api_key.scopes)}"
            f"{' for every client' if all_clients else ''}"
            f"{' (test key: its emails are captured, never delivered)' if test else ''}. "
            "Store it now: it cannot be shown "
            "again."
        )
        self.stdout.write(issued.plaintext)
