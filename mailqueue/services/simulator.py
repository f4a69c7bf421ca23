"""Events of a test key's emails, as an ESP's mailbox simulator would send them by webhook.

When the `simulator` provider has taken an email, each recipient gets a `delivered` event, and
`bounce@simulator.mailqueue` a hard `bounced` and `complaint@simulator.mailqueue` a `complained`
event too. They go through the same function as real ESP webhooks (stored events, the email's
delivered/bounced/complained times, the clients' outbound webhooks), so client code can be
tested end to end. Unlike real ones they add no suppression, so the simulator addresses answer
the same way every time (as SES's simulator does).
"""

from anymail.signals import AnymailTrackingEvent
from django.utils import timezone

from mailqueue.models import EmailJob
from mailqueue.providers.simulator import SIMULATOR_DOMAIN
from mailqueue.validation import address_spec

SIMULATOR = "simulator"
# The metadata key tracking.esp_events links an event to its email by.
_EMAIL_ID_KEY = "mailqueue_email_id"


def _events_for(email: EmailJob, message_id: str) -> list[AnymailTrackingEvent]:
    now = timezone.now()
    events = []
    for address in [*email.to, *email.cc, *email.bcc]:
        recipient = address_spec(address)
        kinds = ["delivered"]
        if recipient == f"bounce@{SIMULATOR_DOMAIN}":
            kinds = ["bounced"]
        elif recipient == f"complaint@{SIMULATOR_DOMAIN}":
            kinds = ["delivered", "complained"]
        for kind in kinds:
            events.append(
                AnymailTrackingEvent(
                    event_type=kind,
                    timestamp=now,
                    event_id=f"simulator:{email.pk}:{recipient}:{kind}",
                    recipient=recipient,
                    message_id=message_id,
                    metadata={_EMAIL_ID_KEY: str(email.pk)},
                    description="Simulated by the test key's simulator provider.",
                    mta_response="550 5.1.1 simulated hard bounce" if kind == "bounced" else None,
                    esp_event={
                        "simulated": kind,
                        "type": "HardBounce" if kind == "bounced" else "",
                    },
                )
            )
    return events


def simulated_events_record(*, sent: list[tuple[EmailJob, str]]) -> None:
    """Record the simulator's events of emails (with their message ids) the `simulator` provider
    has just taken."""
    from tracking.esp_events import esp_events_record

    events = [event for email, message_id in sent for event in _events_for(email, message_id)]
    if events:
        esp_events_record(esp=SIMULATOR, events=events)
