"""`manage.py consume_events [--pubsub CHANNEL]`: turn events published to Redis into emails."""

import signal

from django.core.management.base import BaseCommand

from event_sends.consumer import EventConsumer


class Command(BaseCommand):
    """Run one consumer of the events stream until SIGTERM or SIGINT."""

    help = (
        "Read events from the Redis Stream MAILQUEUE_EVENTS_STREAM as one consumer of the group "
        "and create the emails their rules ask for. SIGTERM/SIGINT: finish the entries in hand, "
        "exit 0."
    )

    def add_arguments(self, parser) -> None:
        """--pubsub may be given several times."""
        parser.add_argument(
            "--pubsub",
            action="append",
            default=[],
            metavar="CHANNEL",
            help="Also subscribe to this pub/sub channel (best effort: a message published "
            "while no consumer listens is lost). May be repeated.",
        )
        parser.add_argument(
            "--name", default=None, help="Consumer name in the group (default: hostname-pid)."
        )

    def handle(self, *args, pubsub: list[str], name: str | None, **options) -> None:
        """Consume until a stop signal."""
        consumer = EventConsumer(name=name, pubsub_channels=pubsub)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: consumer.request_stop())
        consumer.run()
