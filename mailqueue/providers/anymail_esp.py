"""Every ESP anymail supports (amazon_ses, sendgrid, postmark, mailgun, resend, ...) by name."""

from importlib import import_module

from anymail.exceptions import (
    AnymailAPIError,
    AnymailConfigurationError,
    AnymailInvalidAddress,
    AnymailRecipientsRefused,
    AnymailSerializationError,
    AnymailUnsupportedFeature,
)
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from mailqueue.errors import DeliveryError, ProviderConfigurationError
from mailqueue.providers.base import BackendProvider, SendResult, delivery_error

# HTTP statuses that say "try later" or "this account/key has a problem" rather than
# "this message is bad": retried, and the next provider is tried meanwhile.
_TRANSIENT_STATUSES = {401, 403, 408, 409, 425, 429}
# Amazon SES reports throttling and paused sending as HTTP 400 with these codes.
_TRANSIENT_SES_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "LimitExceededException",
    "ServiceUnavailable",
    "AccountSendingPausedException",
    "SendingPausedException",
    "MailFromDomainNotVerifiedException",
}
# Anymail's recipient statuses that mean the recipient will not get the message.
_REFUSED_STATUSES = {"rejected", "invalid", "failed"}


def is_anymail_esp(name: str) -> bool:
    """Whether anymail ships a backend with this name."""
    if not name.replace("_", "").isalnum():
        return False
    try:
        module = import_module(f"anymail.backends.{name}")
    except ImportError:
        return False
    return hasattr(module, "EmailBackend") and name not in {"base", "base_requests", "test"}


class AnymailProvider(BackendProvider):
    """Hands messages to an ESP's HTTP API through anymail, reusing its HTTP session."""

    def _make_backend(self) -> BaseEmailBackend:
        module = import_module(f"anymail.backends.{self.name}")
        try:
            return module.EmailBackend(fail_silently=False)
        except AnymailConfigurationError as exc:
            raise ProviderConfigurationError(f"Provider '{self.name}': {exc}") from exc

    def check_configured(self) -> None:
        """Raise ProviderConfigurationError if anymail refuses this ESP's settings."""
        self._make_backend()  # anymail reads and checks its settings here, without a request

    def _send(self, message: EmailMessage) -> SendResult:
        sent = self._deliver(message)
        status = message.anymail_status
        if not sent:
            raise DeliveryError(f"{self.name} did not accept the message.", transient=False)
        if status.status and status.status <= _REFUSED_STATUSES:
            raise DeliveryError(
                f"{self.name} refused every recipient: {sorted(status.status)}", transient=False
            )
        message_id = status.message_id
        if isinstance(message_id, set):
            # Some ESPs give each recipient its own id; keep one, deterministically.
            message_id = min(message_id) if message_id else ""
        return SendResult(
            message_id=message_id or "",
            rejected={
                address: recipient.status
                for address, recipient in (status.recipients or {}).items()
                if recipient.status in _REFUSED_STATUSES
            },
        )

    def _classify(self, exc: Exception) -> DeliveryError | None:
        if isinstance(exc, ProviderConfigurationError):
            return DeliveryError(
                str(exc), error_class=type(exc).__name__, transient=True, outage=True
            )
        if isinstance(
            exc,
            (
                AnymailRecipientsRefused,
                AnymailInvalidAddress,
                AnymailUnsupportedFeature,
                AnymailSerializationError,
            ),
        ):
            return delivery_error(exc, transient=False)
        if isinstance(exc, AnymailAPIError):
            transient = _api_error_is_transient(exc)
            # Every transient ESP answer (5xx, 429, bad key, no answer) is about the ESP.
            return delivery_error(exc, transient=transient, outage=transient)
        # Anymail wraps network failures in AnymailAPIError, so anything else is left to the
        # common policy (retried, not an outage).
        return None


def _api_error_is_transient(exc: AnymailAPIError) -> bool:
    status = exc.status_code
    response = getattr(exc, "response", None)
    if status is None and isinstance(response, dict):
        # boto3 errors carry a parsed response instead of a status code.
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code", "")
        if code in _TRANSIENT_SES_CODES:
            return True
    if status is None:
        # No answer at all: connection refused, DNS failure, timeout.
        return True
    return status >= 500 or status in _TRANSIENT_STATUSES
