"""The provider base class: owns the order of the steps of handing one message to a provider."""

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.core.mail import EmailMessage
from rq.timeouts import BaseTimeoutException

from mailqueue.errors import DeliveryError

if TYPE_CHECKING:
    from mailqueue.models import CapturedMessage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    """What a provider said when it took a message."""

    message_id: str
    # Recipients the provider refused while accepting the others: address -> reason.
    rejected: dict[str, str] = field(default_factory=dict)
    # The `capture` provider's stored copy, written by the worker with the email's outcome
    # (providers run in send threads, which never touch the database).
    captured: "CapturedMessage | None" = None


class Provider:
    """A way out for email. Subclasses implement `_open`, `_close`, `_send` and `_classify`.

    One instance lives per send thread of a worker process (see the registry), so whatever
    `_open` sets up (an SMTP session, an HTTP session, a boto3 client) is reused across emails
    and never shared between two sends at once.
    """

    name: str = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self._is_open = False

    def open(self) -> None:
        """Open the connection if it is not open yet."""
        if not self._is_open:
            self._open()
            self._is_open = True

    def close(self) -> None:
        """Close the connection, ignoring errors (it may already be dead)."""
        if self._is_open:
            self._is_open = False
            try:
                self._close()
            except Exception:
                logger.debug("closing provider %s failed", self.name, exc_info=True)

    def send(self, message: EmailMessage) -> SendResult:
        """Hand over one message; return the provider's answer or raise DeliveryError."""
        try:
            self.open()
            return self._send(message)
        except (DeliveryError, BaseTimeoutException):
            # A job timeout is not the provider's verdict on the message: let the worker see it.
            raise
        except Exception as exc:
            error = self._classify(exc)
            if error.transient:
                # A transient failure often means a broken connection: start afresh next time.
                self.close()
            raise error from exc

    def _open(self) -> None:
        """Set up the connection (subclass hook)."""

    def _close(self) -> None:
        """Tear down the connection (subclass hook)."""

    def _send(self, message: EmailMessage) -> SendResult:
        raise NotImplementedError

    def _classify(self, exc: Exception) -> DeliveryError:
        """Turn a provider exception into a transient or permanent DeliveryError."""
        return DeliveryError(str(exc) or type(exc).__name__, error_class=_error_class(exc))


def _error_class(exc: Exception) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def delivery_error(
    exc: Exception, *, transient: bool, message: str | None = None, outage: bool = False
) -> DeliveryError:
    """Build a DeliveryError that keeps the original exception's class name."""
    return DeliveryError(
        message or str(exc) or type(exc).__name__,
        error_class=_error_class(exc),
        transient=transient,
        outage=outage,
    )
