"""One HTTP session to the service: authentication, timeouts, JSON, errors and safe retries."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from mailqueue_client import __version__
from mailqueue_client.errors import (
    ApiError,
    ConfigurationError,
    Conflict,
    MailqueueConnectionError,
    MailqueueError,
    MailqueueTimeout,
    RateLimited,
    ServerError,
    error_from_response,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
API_PREFIX = "/api/v1/"


class Retry(enum.Enum):
    """What may be retried for one operation, by what a repeat would do on the service."""

    # Reads, PUT/PATCH/DELETE, pure POSTs and sends with an Idempotency-Key: a repeat changes
    # nothing more, so connection errors, 409 "still being processed", 429 and 5xx are retried.
    SAFE = "safe"
    # A POST whose repeat could act twice (retry an email, run a schedule): retried only when the
    # service surely did not see it (the connection was never made) or refused it (429).
    UNSAFE = "unsafe"
    # The one-time-code endpoints: like UNSAFE, and their 429 is the answer (too soon after the
    # last code, too many this hour), so it is raised at once.
    FINAL_429 = "final_429"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: exponential backoff with jitter, within a deadline."""

    # Attempts in all, the first included (1 turns retries off).
    max_attempts: int = 4
    # The first wait; each next one doubles, up to `max_backoff`.
    backoff: float = 0.5
    max_backoff: float = 8.0
    # Seconds from the first attempt after which no new attempt starts (waits included).
    deadline: float = 60.0

    def delay(self, retry_number: int) -> float:
        """The wait before retry `retry_number` (1-based): half fixed, half random, so many
        clients that failed together do not all come back at the same instant."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (retry_number - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def new_idempotency_key() -> str:
    """A fresh key for one logical send, reused by each retry of it."""
    return str(uuid.uuid4())


def _json_default(value: Any) -> Any:
    """Encode what a template context commonly holds besides plain JSON."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _retry_after_seconds(response: requests.Response) -> float | None:
    """Retry-After as seconds (it may be a number or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max(0.0, (moment - dt.datetime.now(dt.UTC)).total_seconds())


def _never_sent(error: requests.ConnectionError) -> bool:
    """Whether the request failed before reaching the service (no connection was made)."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = error.args[0] if error.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


def _parsed(response: requests.Response) -> Any:
    """The JSON of a success (None when empty); an answer that is not JSON is not the API's."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise ApiError(
            f"{response.status_code} answer from {response.url} is not JSON: is the base URL "
            "the Mailqueue service?",
            status=response.status_code,
            code="invalid_response",
            body=response.text[:1000],
            response=response,
        ) from None


class Transport:
    """Sends requests to one service with one API key over one pooled session."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float | tuple[float, float] = 10.0,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"base_url must be the service's http(s) URL, such as https://mail.example.com; "
                f"got {base_url!r}."
            )
        if not api_key:
            raise ConfigurationError("api_key is required (an `mq_...` key of the service).")
        root = base_url.rstrip("/")
        # Accept the API's own URL too: the settings name the service, but a copied /api/v1/
        # should not become /api/v1/api/v1/.
        if root.endswith(API_PREFIX.rstrip("/")):
            root = root[: -len(API_PREFIX.rstrip("/"))]
        self.api_url = root + API_PREFIX
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": (
                    f"mailqueue-client/{__version__} {requests.utils.default_user_agent()}"
                ),
            }
        )
        # Swappable so tests can record the waits instead of sleeping them.
        self.sleep = sleep

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        retry: Retry = Retry.SAFE,
    ) -> Any:
        """Send one operation (retrying as `retry` allows) and return its parsed JSON answer
        (None for 204); raise an ApiError or a MailqueueConnectionError when it fails."""
        url = self.api_url + path.lstrip("/")
        headers = {}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, default=_json_default).encode()
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        query = {key: value for key, value in (params or {}).items() if value is not None}
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                # No redirects: requests would turn a redirected POST into a GET, and a send
                # would "succeed" with a list of emails. A redirect is a wrong base URL.
                response = self.session.request(
                    method,
                    url,
                    data=data,
                    params=query,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.Timeout as exc:
                error: MailqueueError = MailqueueTimeout(f"{method} {url} timed out: {exc}")
                cause: Exception | None = exc
                retryable = retry is Retry.SAFE or isinstance(exc, requests.ConnectTimeout)
                wait = None
            except requests.ConnectionError as exc:
                error = MailqueueConnectionError(f"{method} {url} failed: {exc}")
                cause = exc
                retryable = retry is Retry.SAFE or _never_sent(exc)
                wait = None
            except requests.RequestException as exc:
                # An invalid URL or the like: no attempt could ever succeed.
                raise MailqueueConnectionError(f"{method} {url} failed: {exc}") from exc
            else:
                if response.status_code < 300:
                    return _parsed(response)
                wait = _retry_after_seconds(response)
                error = error_from_response(response, retry_after=wait)
                cause = None
                retryable = self._retryable(error, retry, keyed=idempotency_key is not None)
            delay = wait if wait is not None else self.retry.delay(attempt)
            elapsed = time.monotonic() - started
            if (
                not retryable
                or attempt >= self.retry.max_attempts
                or elapsed + delay > self.retry.deadline
            ):
                raise error from cause
            self.sleep(delay)

    @staticmethod
    def _retryable(error: ApiError, retry: Retry, *, keyed: bool) -> bool:
        """Whether an error answer may be asked again under this operation's retry rule."""
        if isinstance(error, RateLimited):
            return retry is not Retry.FINAL_429
        if retry is not Retry.SAFE:
            return False
        if isinstance(error, ServerError):
            return True
        # Only the idempotency record's own 409 ("still being processed", reported on the
        # Idempotency-Key field) ends by itself; any other conflict is the answer.
        return isinstance(error, Conflict) and keyed and IDEMPOTENCY_HEADER in error.field_errors
