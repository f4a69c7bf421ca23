"""The Python client against a faked HTTP boundary (`responses`): retries and their limits,
Retry-After, Idempotency-Key reuse, error mapping, the one-time-code 429, pagination."""

import datetime as dt
import json
import pickle
import smtplib
import uuid

import pytest
import requests
import responses
from mailqueue_client import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    Conflict,
    IdempotencyMismatch,
    Mailqueue,
    MailqueueConnectionError,
    MailqueueError,
    MailqueueTimeout,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RetryPolicy,
    ServerError,
    ValidationError,
    attachment,
)
from urllib3.exceptions import MaxRetryError, NewConnectionError

BASE = "https://mail.example.com"
API = f"{BASE}/api/v1/"
ACCEPTED = {"id": "6f1c1c52-2f55-4a0e-9a8e-0d3c2b1f0e11", "status": "queued"}
BUSY = {"Idempotency-Key": ["A request with this Idempotency-Key is still being processed."]}


@pytest.fixture
def waits() -> list[float]:
    """The delays the client asked to sleep (recorded, not slept)."""
    return []


@pytest.fixture
def client(waits) -> Mailqueue:
    """A client whose waits are recorded instead of slept."""
    mailqueue = Mailqueue(BASE, "mq_test_secret", retry=RetryPolicy(max_attempts=4, deadline=60))
    mailqueue.transport.sleep = waits.append
    return mailqueue


@pytest.fixture
def fake():
    """The HTTP boundary: every request must match a registered answer."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _keys(fake) -> list[str | None]:
    return [call.request.headers.get("Idempotency-Key") for call in fake.calls]


def _refused(error: Exception) -> ConnectionError:
    """What requests raises when nothing listens at the address (no request was sent)."""
    reason = NewConnectionError(None, "Failed to establish a new connection: refused")
    return requests.ConnectionError(MaxRetryError(None, "/api/v1/otp/", reason))


def test_send_posts_json_with_the_key_and_a_fresh_idempotency_key(client, fake):
    """The body is the API's fields (None left out, one address made a list); the key is a
    uuid4 unless the caller gives one, and each logical send gets its own."""
    fake.post(f"{API}emails/", json=ACCEPTED, status=202)

    answer = client.emails.send(
        to="ada@example.com",
        subject="Hi",
        text="Hello",
        send_at=dt.datetime(2030, 1, 2, 9, 0, tzinfo=dt.UTC),
        attachments=[attachment("a.txt", "hé", content_id="a1")],
    )
    client.emails.send(to=["bob@example.com"], subject="Hi", text="Hello")
    client.emails.send(to="cy@example.com", subject="Hi", text="x", idempotency_key="order-1")

    assert answer == ACCEPTED
    first = fake.calls[0].request
    assert first.headers["Authorization"] == "Bearer mq_test_secret"
    assert first.headers["Content-Type"] == "application/json"
    assert json.loads(first.body) == {
        "to": ["ada@example.com"],
        "subject": "Hi",
        "text": "Hello",
        "send_at": "2030-01-02T09:00:00+00:00",
        "attachments": [{"filename": "a.txt", "content": "aMOp", "content_id": "a1"}],
    }
    first_key, second_key, given = _keys(fake)
    assert uuid.UUID(first_key).version == 4
    assert second_key != first_key
    assert given == "order-1"


def test_a_send_retried_after_503_and_a_lost_connection_reuses_its_key(client, fake, waits):
    """Every attempt of one send carries the same Idempotency-Key, so the service answers
    the retry with the first acceptance instead of sending twice; the waits grow."""
    fake.post(f"{API}emails/", json={"detail": "Redis is unavailable."}, status=503)
    fake.post(f"{API}emails/", body=requests.ConnectionError("connection reset by peer"))
    fake.post(f"{API}emails/", json=ACCEPTED, status=202)

    assert client.emails.send(to="ada@example.com", subject="s", text="t") == ACCEPTED

    keys = _keys(fake)
    assert len(keys) == 3 and len(set(keys)) == 1
    assert len(waits) == 2
    assert 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0


def test_409_still_being_processed_is_retried_until_the_first_answer(client, fake, waits):
    """The idempotency record's 409 ends by itself: the client asks again with the same key."""
    fake.post(f"{API}batches/", json=BUSY, status=409)
    fake.post(f"{API}batches/", json={"id": "b1", "count": 1}, status=202)

    answer = client.batches.send(template="welcome", recipients=[{"to": "ada@example.com"}])

    assert answer["id"] == "b1"
    assert len(set(_keys(fake))) == 1 and len(fake.calls) == 2
    assert json.loads(fake.calls[0].request.body)["recipients"] == [{"to": ["ada@example.com"]}]


def test_any_other_conflict_is_the_answer(client, fake):
    """A 409 about the email's state (retry of a sent email) is raised at once."""
    fake.post(
        f"{API}emails/e1/retry/",
        json={"detail": "Only a failed or cancelled email can be retried."},
        status=409,
    )

    with pytest.raises(Conflict) as raised:
        client.emails.retry("e1")

    assert len(fake.calls) == 1
    assert raised.value.status == 409
    assert "Only a failed or cancelled email" in str(raised.value)


def test_429_waits_as_long_as_retry_after_says(client, fake, waits):
    """Retry-After (seconds or an HTTP date) is the wait before the next attempt."""
    fake.get(
        f"{API}templates/", json={"detail": "Throttled."}, status=429, headers={"Retry-After": "3"}
    )
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)).strftime(
        "%a, %d %b %Y %H:%M:%S GMT"
    )
    fake.get(
        f"{API}templates/",
        json={"detail": "Throttled."},
        status=429,
        headers={"Retry-After": later},
    )
    fake.get(f"{API}templates/", json=[{"slug": "welcome"}])

    assert client.templates.list() == [{"slug": "welcome"}]

    assert waits[0] == 3.0
    assert 17 <= waits[1] <= 20


def test_429_whose_wait_passes_the_deadline_is_raised_at_once(client, fake, waits):
    """No attempt starts after the deadline: a Retry-After beyond it ends the call now."""
    fake.get(
        f"{API}queues/", json={"detail": "Throttled."}, status=429, headers={"Retry-After": "120"}
    )

    with pytest.raises(RateLimited) as raised:
        client.queues.list()

    assert raised.value.retry_after == 120.0
    assert waits == [] and len(fake.calls) == 1


def test_one_time_code_429_is_final(client, fake, waits):
    """Too soon after the last code is the answer: one request, RateLimited with the wait."""
    fake.post(
        f"{API}otp/",
        json={"email": ["A code was sent less than 30 seconds ago."]},
        status=429,
        headers={"Retry-After": "30"},
    )
    fake.post(f"{API}otp/verify/", json={"detail": "Throttled."}, status=429)

    with pytest.raises(RateLimited) as raised:
        client.otp.send("ada@example.com")
    with pytest.raises(RateLimited):
        client.otp.verify("ada@example.com", "123456")

    assert len(fake.calls) == 2 and waits == []
    assert raised.value.retry_after == 30.0
    assert raised.value.field_errors == {"email": ["A code was sent less than 30 seconds ago."]}


def test_one_time_code_is_retried_only_when_it_never_reached_the_service(client, fake, waits):
    """A refused connection sent nothing: retried. A read timeout may have issued a code (a
    repeat would replace it): raised."""
    fake.post(f"{API}otp/", body=_refused(None))
    fake.post(f"{API}otp/", json={"id": "c1", "expires_at": "2030-01-01T00:00:00Z"}, status=202)
    fake.post(f"{API}otp/verify/", body=requests.ReadTimeout("read timed out"))

    assert client.otp.send("ada@example.com")["id"] == "c1"
    with pytest.raises(MailqueueTimeout) as raised:
        client.otp.verify("ada@example.com", "123456")

    assert len(fake.calls) == 3 and len(waits) == 1
    assert isinstance(raised.value, TimeoutError)
    assert isinstance(raised.value.__cause__, requests.ReadTimeout)


def test_unsafe_post_is_not_retried_on_a_server_error(client, fake, waits):
    """Running a schedule twice would send twice: a 502 after it may have run is raised."""
    fake.post(f"{API}schedules/s1/run/", json={"detail": "Bad gateway"}, status=502)

    with pytest.raises(ServerError):
        client.schedules.run("s1")

    assert len(fake.calls) == 1 and waits == []


def test_reads_give_up_after_max_attempts(client, fake, waits):
    """Four attempts in all, then the last error, carrying its status."""
    fake.get(f"{API}emails/e1/", json={"detail": "Internal server error."}, status=500)

    with pytest.raises(ServerError) as raised:
        client.emails.get("e1")

    assert len(fake.calls) == 4 and len(waits) == 3
    assert raised.value.status == 500 and raised.value.code == "server_error"


def test_connection_errors_are_wrapped_after_the_retries(client, fake, waits):
    """A service that stays unreachable: MailqueueConnectionError (a ConnectionError too)."""
    fake.get(f"{API}batches/b1/", body=_refused(None))

    with pytest.raises(MailqueueConnectionError) as raised:
        client.batches.get("b1")

    assert isinstance(raised.value, ConnectionError) and isinstance(raised.value, MailqueueError)
    assert len(fake.calls) == 4


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (
            400,
            {"to": ["Enter a valid email address."], "subject": ["Required."]},
            ValidationError,
            "invalid",
        ),
        (401, {"detail": "Invalid API key."}, AuthenticationError, "not_authenticated"),
        (
            403,
            {"detail": "This API key lacks the 'send' scope."},
            PermissionDenied,
            "permission_denied",
        ),
        (404, {"detail": "Not found."}, NotFound, "not_found"),
        (413, {"detail": "Request body too large."}, PayloadTooLarge, "payload_too_large"),
        (
            422,
            {"Idempotency-Key": ["Used with a different body."]},
            IdempotencyMismatch,
            "idempotency_mismatch",
        ),
    ],
)
def test_error_answers_map_to_one_class_each(client, fake, status, body, cls, code):
    """Each status has its class; the message and field errors are the service's own, and
    every class is an SMTPException (what send_mail callers catch)."""
    fake.post(f"{API}emails/", json=body, status=status)

    with pytest.raises(cls) as raised:
        client.emails.send(to="ada@example.com", subject="s", text="t")

    error = raised.value
    assert isinstance(error, ApiError) and isinstance(error, smtplib.SMTPException)
    assert (error.status, error.code) == (status, code)
    assert error.response is not None and error.body == body
    assert len(fake.calls) == 1
    if "detail" in body:
        assert body["detail"] in str(error) and error.field_errors == {}
    else:
        assert error.field_errors == body
        assert all(message in str(error) for messages in body.values() for message in messages)


def test_nested_field_errors_are_flattened(client, fake):
    """Per-item errors (`recipients[1].to`) keep their path in the message."""
    fake.post(
        f"{API}batches/",
        json={"recipients": [{}, {"to": ["Enter a valid email address."]}]},
        status=400,
    )

    with pytest.raises(ValidationError) as raised:
        client.batches.send(template="t", recipients=[{"to": "a@example.com"}, {"to": "x"}])

    assert raised.value.field_errors == {"recipients": ["to: Enter a valid email address."]}


def test_iterate_follows_the_cursors_whatever_host_the_links_name(client, fake):
    """The next link may name the service's internal host: only its cursor is reused."""
    fake.get(
        f"{API}suppressions/",
        match=[responses.matchers.query_param_matcher({"page_size": "2", "reason": "manual"})],
        json={
            "results": [{"address": "a@example.com"}, {"address": "b@example.com"}],
            "next": "http://10.0.0.5:8000/api/v1/suppressions/?cursor=abc&page_size=2",
            "previous": None,
        },
    )
    fake.get(
        f"{API}suppressions/",
        match=[
            responses.matchers.query_param_matcher(
                {"page_size": "2", "reason": "manual", "cursor": "abc"}
            )
        ],
        json={"results": [{"address": "c@example.com"}], "next": None, "previous": "x"},
    )

    addresses = [
        item["address"] for item in client.suppressions.iterate(reason="manual", page_size=2)
    ]
    page = client.suppressions.list(reason="manual", page_size=2)

    assert addresses == ["a@example.com", "b@example.com", "c@example.com"]
    assert page.next_cursor == "abc" and len(page.results) == 2


def test_paths_are_encoded_and_deletes_answer_none(client, fake):
    """An address with `+` is one path segment; a 204 returns None; `topic` is a parameter."""
    fake.delete(
        f"{API}suppressions/ada%2Bnews@example.com/",
        match=[responses.matchers.query_param_matcher({"topic": "news"})],
        status=204,
    )

    assert client.suppressions.remove("ada+news@example.com", topic="news") is None
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    "base_url", ["https://mail.example.com", "https://mail.example.com/", f"{API}", API[:-1]]
)
def test_base_url_with_or_without_the_api_path(base_url, fake):
    """MAILQUEUE_URL names the service; a copied /api/v1/ is not doubled."""
    fake.get(f"{API}queues/", json={"queues": [], "totals": {}})

    assert Mailqueue(base_url, "k").queues.list() == {"queues": [], "totals": {}}


def test_configuration_errors_are_raised_before_any_request():
    """No URL or no key: a ConfigurationError (a ValueError) naming what is missing."""
    with pytest.raises(ConfigurationError, match="base_url"):
        Mailqueue("mail.example.com", "k")
    with pytest.raises(ConfigurationError, match="api_key"):
        Mailqueue(BASE, "")


def test_a_redirect_is_not_followed(client, fake):
    """requests would replay a redirected POST as a GET (a send that "succeeds" with a list):
    a redirect is reported as a wrong base URL, and nothing is retried."""
    fake.post(
        f"{API}emails/",
        status=301,
        headers={"Location": "https://mail.example.com:8443/api/v1/emails/"},
    )

    with pytest.raises(ApiError) as raised:
        client.emails.send(to="ada@example.com", subject="s", text="t")

    assert raised.value.code == "redirect" and raised.value.status == 301
    assert "https://mail.example.com:8443/api/v1/emails/" in str(raised.value)
    assert len(fake.calls) == 1


def test_a_success_that_is_not_json_is_not_the_apis(client, fake):
    """A 200 HTML page (the base URL names another site) is an error, not a result."""
    fake.get(f"{API}templates/", body="<html>Welcome to nginx</html>", status=200)

    with pytest.raises(ApiError, match="not JSON"):
        client.templates.list()


def test_api_errors_survive_pickling(client, fake):
    """Task queues pickle what a task raised: class, status, field errors and wait survive."""
    fake.post(f"{API}otp/", json={"email": ["Too soon."]}, status=429, headers={"Retry-After": "7"})
    with pytest.raises(RateLimited) as raised:
        client.otp.send("ada@example.com")

    copy = pickle.loads(pickle.dumps(raised.value))

    assert type(copy) is RateLimited and str(copy) == str(raised.value)
    assert (copy.status, copy.retry_after) == (429, 7.0)
    assert copy.field_errors == {"email": ["Too soon."]}
    assert copy.response is None
