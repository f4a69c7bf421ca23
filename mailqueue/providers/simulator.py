"""The `simulator` provider: where a test key's emails go (the capture inbox, never a real ESP).

Addresses at the simulator domain behave like an ESP's mailbox simulator (SES's
`bounce@simulator.amazonses.com`, Postmark's test token): `reject@` is refused at once, and
`bounce@` and `complaint@` are taken and then produce a bounce or a complaint event, recorded
with the email's outcome by `mailqueue.services.simulator`.
"""

from email.utils import parseaddr

from django.core.mail import EmailMessage

from mailqueue.errors import DeliveryError
from mailqueue.providers.base import SendResult
from mailqueue.providers.capture import CaptureProvider

SIMULATOR_DOMAIN = "simulator.mailqueue"
REJECT_ADDRESS = f"reject@{SIMULATOR_DOMAIN}"


class SimulatorProvider(CaptureProvider):
    """Captures like `capture`; refuses a message to reject@simulator.mailqueue."""

    def _send(self, message: EmailMessage) -> SendResult:
        if REJECT_ADDRESS in {parseaddr(address)[1].lower() for address in message.recipients()}:
            raise DeliveryError(
                f"{REJECT_ADDRESS}: simulated rejection (a test key's email)",
                error_class="rejected",
                transient=False,
            )
        return super()._send(message)
