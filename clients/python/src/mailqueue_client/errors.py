"""The client's one exception hierarchy: every error it raises is a MailqueueError.

MailqueueError subclasses `smtplib.SMTPException` (itself an `OSError`, as requests' own errors
are): Django's documentation tells callers of `send_mail()` to expect an SMTPException when
sending fails, so code written for the SMTP backend keeps catching failures after switching to
`mailqueue_client.django.EmailBackend`.
"""

from __future__ import annotations

import builtins
import smtplib
from typing import Any

import requests


class MailqueueError(smtplib.SMTPException):
    """Base of every error the client raises."""

    def __init__(self, message: str) -> None:
        # One argument only: OSError would read two as (errno, strerror).
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(MailqueueError, ValueError):
    """The client was given a setting it cannot use (no URL, no API key, a bad value)."""


class UnsupportedFeature(MailqueueError, ValueError):
    """A message uses something the API cannot express (the Django backend refuses it rather
    than send something else than what was asked)."""


class MailqueueConnectionError(MailqueueError, builtins.ConnectionError):
    """The service could not be reached, or the connection broke before an answer came."""


class MailqueueTimeout(MailqueueConnectionError, TimeoutError):
    """The service did not answer within the timeout."""


class ApiError(MailqueueError):
    """The service answered with an error status.

    `field_errors` maps each refused field to its messages (`{"to": ["..."]}`), as the service
    reports them; `message` is `detail` when the service gave one, else a summary of the fields.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        field_errors: dict[str, list[str]] | None = None,
        body: Any = None,
        response: requests.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field_errors = field_errors or {}
        self.body = body
        self.response = response

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle without the response (task queues pickle the exceptions tasks raise, and the
        keyword-only arguments would otherwise make unpickling fail)."""
        state = {**self.__dict__, "response": None}
        return (_restore, (type(self), self.message, state))


class ValidationError(ApiError, ValueError):
    """400: the request was refused; `field_errors` names each field and why."""


class AuthenticationError(ApiError):
    """401: no API key, or an unknown, malformed or revoked one."""


class PermissionDenied(ApiError):
    """403: the API key lacks the scope this operation needs."""


class NotFound(ApiError, LookupError):
    """404: no such resource for this client."""


class Conflict(ApiError):
    """409: the resource's state forbids the operation, or a request with the same
    Idempotency-Key is still being processed (retried automatically until the deadline)."""


class IdempotencyMismatch(ApiError):
    """422: the Idempotency-Key was used before with a different request body."""


class PayloadTooLarge(ApiError):
    """413: the request body is larger than the service accepts."""


class RateLimited(ApiError):
    """429: too many requests; `retry_after` is the wait in seconds the service asked for."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the service failed (500 is a bug on its side; 503 an outage that changed nothing)."""


def _restore(cls: type[ApiError], message: str, state: dict[str, Any]) -> ApiError:
    """An unpickled ApiError (see ApiError.__reduce__)."""
    error = cls.__new__(cls)
    MailqueueError.__init__(error, message)
    error.__dict__.update(state)
    return error


# Status -> (class, code); anything else 4xx is a plain ApiError with code "client_error".
_BY_STATUS: dict[int, tuple[type[ApiError], str]] = {
    400: (ValidationError, "invalid"),
    401: (AuthenticationError, "not_authenticated"),
    403: (PermissionDenied, "permission_denied"),
    404: (NotFound, "not_found"),
    409: (Conflict, "conflict"),
    413: (PayloadTooLarge, "payload_too_large"),
    422: (IdempotencyMismatch, "idempotency_mismatch"),
    429: (RateLimited, "rate_limited"),
}


def _messages(value: Any) -> list[str]:
    """Flatten one field's error value (a string, a list, nested per-item errors) to strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [message for item in value for message in _messages(item)]
    if isinstance(value, dict):
        return [f"{key}: {message}" for key, item in value.items() for message in _messages(item)]
    return [str(value)]


def error_from_response(
    response: requests.Response, *, retry_after: float | None = None
) -> ApiError:
    """The ApiError subclass matching an error answer, with its message and field errors."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    field_errors: dict[str, list[str]] = {}
    message = ""
    if isinstance(body, dict):
        for name, value in body.items():
            if name == "detail" and isinstance(value, str):
                message = value
            else:
                field_errors[str(name)] = _messages(value)
    if not message:
        message = "; ".join(
            f"{name}: {' '.join(messages)}" for name, messages in field_errors.items()
        ) or (body.strip()[:200] if isinstance(body, str) and body.strip() else response.reason)
    message = f"{status} {message}" if message else str(status)
    if status < 400:
        # The client follows no redirect (see Transport.request): the base URL is wrong.
        location = response.headers.get("Location", "")
        message = f"{status} redirected to {location}: set the base URL to the service's own URL"
        cls, code = ApiError, "redirect"
    elif status >= 500:
        cls, code = ServerError, "server_error"
    else:
        cls, code = _BY_STATUS.get(status, (ApiError, "client_error"))
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "field_errors": field_errors,
        "body": body,
        "response": response,
    }
    if cls is RateLimited:
        kwargs["retry_after"] = retry_after
    return cls(message, **kwargs)
