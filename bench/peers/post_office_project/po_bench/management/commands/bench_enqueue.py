"""`manage.py bench_enqueue --mode batch|single --count N --per-call K`: queue bench emails."""

import json
import time

from django.core.management.base import BaseCommand
from post_office import mail
from post_office.models import EmailTemplate

from bench.lib import workload


class Command(BaseCommand):
    """Queue emails with post_office's public API and print the seconds it took, as JSON."""

    def add_arguments(self, parser) -> None:
        """Mode, count, emails per send_many call and the number of the first email."""
        parser.add_argument("--mode", choices=["batch", "single"], required=True)
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--per-call", type=int, default=1000)
        parser.add_argument("--first", type=int, default=0)

    def handle(self, *args, mode: str, count: int, per_call: int, first: int, **options) -> None:
        """batch: mail.send_many(per_call messages); single: one mail.send per email."""
        template, _ = EmailTemplate.objects.get_or_create(
            name=workload.TEMPLATE_SLUG,
            defaults={
                "subject": workload.SUBJECT,
                "content": workload.TEXT,
                "html_content": workload.HTML,
            },
        )

        def kwargs(number: int) -> dict:
            return {
                "recipients": [workload.address(number)],
                "sender": workload.FROM_EMAIL,
                "template": template,
                "context": workload.context_for(number),
                # Render in the sender, as Mailqueue's worker does, not when queued.
                "render_on_delivery": True,
            }

        started = time.perf_counter()
        if mode == "batch":
            for start in range(first, first + count, per_call):
                end = min(start + per_call, first + count)
                mail.send_many([kwargs(n) for n in range(start, end)])
        else:
            for number in range(first, first + count):
                mail.send(**kwargs(number))
        self.stdout.write(json.dumps({"seconds": time.perf_counter() - started, "count": count}))
