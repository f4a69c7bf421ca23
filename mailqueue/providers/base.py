"""The provider base classes: `Provider` owns the order of the steps of handing one message to a
provider and the policy for exceptions nobody classified; `BackendProvider` adds the steps of the
providers that wrap a Django email backend."""

import logging
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from typing import TYPE_CHECKING

from django.core.mail import BadHeaderError, EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
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
    """A way out for email. Subclasses implement `_send`, and `_open`, `_close` and `_classify`
    when they have a connection to manage or exceptions to classify.

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

    def check_configured(self) -> None:
        """Raise ProviderConfigurationError if this provider's settings cannot work (no network
        call: `GET /health/` asks it)."""

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
        except (BadHeaderError, HeaderParseError) as exc:
            # The message itself cannot be written (a header Django or the email package
            # refuses): it fails on its own, and says nothing about the provider.
            raise DeliveryError(
                f"The message cannot be built: {exc}", error_class="message", transient=False
            ) from exc
        except Exception as exc:
            error = self._classify(exc)
            if error is None:
                error = unclassified_error(exc)
            if error.transient:
                # A transient failure often means a broken connection: start afresh next time.
                self.close()
            raise error from exc

    def _open(self) -> None:
        """Set up the connection (subclass hook)."""

    def _close(self) -> None:
        """Tear down the connection (subclass hook)."""

    def _send(self, message: EmailMessage) -> SendResult:
        """Hand one message to the provider (subclass hook); exceptions go to `_classify`."""
        raise NotImplementedError

    def _classify(self, exc: Exception) -> DeliveryError | None:
        """The DeliveryError for an exception this provider knows, or None for the common policy
        of `unclassified_error` (subclass hook)."""
        return None


class BackendProvider(Provider):
    """A provider that hands messages to a Django email backend kept open across emails.

    Subclasses build the backend in `_make_backend` and hand a message over with `_deliver`; the
    backend's `open()` makes the connection (an SMTP session, an HTTP session), so a failure to
    connect is classified like a failure to send.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.backend: BaseEmailBackend | None = None

    def _make_backend(self) -> BaseEmailBackend:
        """A new, unopened backend with this provider's settings (subclass hook)."""
        raise NotImplementedError

    def _open(self) -> None:
        self.backend = self._make_backend()
        self.backend.open()

    def _close(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.close()

    def _deliver(self, message: EmailMessage) -> int:
        """Hand one message to the open backend; how many messages it sent (0 or 1)."""
        message.connection = self.backend
        return self.backend.send_messages([message])


def message_id(message: EmailMessage) -> str:
    """The Message-ID Mailqueue set on the message, without its angle brackets."""
    return message.extra_headers["Message-ID"].strip("<>")


def unclassified_error(exc: Exception) -> DeliveryError:
    """The one policy for an exception no provider classified: transient, but not an outage."""
    # Such an exception is something nobody foresaw (a library's new exception class, a bug, a
    # hiccup of the host), and nothing in it says that the message is bad. Retrying costs at
    # most MAILQUEUE_MAX_ATTEMPTS tries, and the worker tries the next provider at once, which
    # may well deliver; failing the email for good would lose it on the first surprise. It is
    # not reported as an outage, and counts as one failure for the provider's circuit breaker:
    # one message's surprise does not take the provider away from every email, a run of them
    # within the breaker's window does.
    error = delivery_error(exc, transient=True)
    error.unclassified = True
    return error


def delivery_error(
    exc: Exception, *, transient: bool, message: str | None = None, outage: bool = False
) -> DeliveryError:
    """Build a DeliveryError that keeps the original exception's class name."""
    return DeliveryError(
        message or str(exc) or type(exc).__name__,
        error_class=f"{type(exc).__module__}.{type(exc).__qualname__}",
        transient=transient,
        outage=outage,
    )
