"""Mailqueue's exception hierarchy; the API exception handler maps each class to an HTTP answer."""

from django.core.exceptions import ImproperlyConfigured


class MailqueueError(Exception):
    """Base of every error Mailqueue raises on purpose."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict:
        """Field-level error body, in DRF's shape: {field: [message]} or {detail: message}."""
        if self.field:
            return {self.field: [self.message]}
        return {"detail": self.message}


class ValidationFailed(MailqueueError, ValueError):
    """Bad input: a field is missing, malformed or not allowed."""


class TemplateNotFound(ValidationFailed):
    """No active template with that slug."""


class TemplateRenderError(MailqueueError, ValueError):
    """The template cannot be compiled or rendered with the given context."""


class InvalidTransition(MailqueueError):
    """The email is not in a status that allows this operation (HTTP 409)."""

    status_code = 409


class QueueNotFound(MailqueueError, LookupError):
    """No queue (priority) has that name (HTTP 404)."""

    status_code = 404


class IdempotencyConflict(MailqueueError):
    """A request with the same Idempotency-Key is still being processed (HTTP 409)."""

    status_code = 409


class IdempotencyMismatch(MailqueueError):
    """The Idempotency-Key was used before with a different body (HTTP 422)."""

    status_code = 422


class ProviderConfigurationError(MailqueueError, ImproperlyConfigured):
    """A provider name is unknown or its settings are missing."""


class DeliveryError(MailqueueError):
    """A provider refused or failed to take a message."""

    transient = True

    def __init__(
        self,
        message: str,
        *,
        error_class: str = "",
        transient: bool = True,
        outage: bool = False,
        unclassified: bool = False,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.transient = transient
        # The provider itself is unreachable or unusable (not just this message): skip it for a
        # while instead of paying its timeout for every email.
        self.outage = outage
        # No provider recognised the exception (see providers.base.unclassified_error).
        self.unclassified = unclassified

    @property
    def counts_against_provider(self) -> bool:
        """Whether the failure says something about the provider rather than this message: an
        outage, or an exception nobody classified. These open its circuit breaker; a reply about
        one message (an SMTP 451 for a greylisted recipient) does not, so a few deferred
        recipients never stop everyone's mail."""
        return self.outage or self.unclassified

    @property
    def kind(self) -> str:
        """What went wrong, for metrics: `outage`, `timeout`, `transient` or `permanent`."""
        if self.outage:
            return "outage"
        if "timeout" in self.error_class.lower() or "timed out" in self.message.lower():
            return "timeout"
        return "transient" if self.transient else "permanent"
