"""Structured logs and request ids: JSON and text lines, X-Request-ID, the outcome and request
lines, context from the request and the job, redaction of addresses."""

import io
import json
import logging
import re
import runpy
import sys
from pathlib import Path

import environ
import pytest
from django.core.exceptions import ImproperlyConfigured

from mailqueue.logs import JsonFormatter, TextFormatter, job_id_reset, job_id_set, log_formatter
from mailqueue.models import EmailJob

pytestmark = pytest.mark.django_db

REQUIRED = {"timestamp", "level", "logger", "message", "event"}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
SETTINGS = Path(__file__).resolve().parents[2] / "config" / "settings.py"


@pytest.fixture
def log_output():
    """Every line the process logs at INFO or above while the test runs, as the handler writes
    them; call with a formatter to choose the format (JSON by default)."""
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def read(formatter: logging.Formatter | None = None) -> str:
        if formatter is not None:
            handler.setFormatter(formatter)
        return stream.getvalue()

    yield read
    root.removeHandler(handler)
    root.setLevel(level)


def json_lines(text: str) -> list[dict]:
    """Each line parsed as one JSON object (failing on a line that is not one)."""
    return [json.loads(line) for line in text.splitlines()]


def events(text: str, event: str) -> list[dict]:
    """The JSON lines of one event."""
    return [line for line in json_lines(text) if line["event"] == event]


def post_email(api, request_id: str | None = None, **fields):
    """POST one plain email, with an X-Request-ID header when given."""
    body = {"to": "ada@example.com", "subject": "Hi", "text": "Hello", **fields}
    headers = {"HTTP_X_REQUEST_ID": request_id} if request_id is not None else {}
    return api.post("/api/v1/emails/", body, format="json", **headers)


def test_valid_request_id_is_echoed_and_stored_on_the_email(api):
    """A valid X-Request-ID comes back in the answer and is on the email it created."""
    response = post_email(api, "checkout-42.a:b_C")

    assert response.status_code == 202
    assert response["X-Request-ID"] == "checkout-42.a:b_C"
    email = EmailJob.objects.get(pk=response.json()["id"])
    assert email.request_id == "checkout-42.a:b_C"
    detail = api.get(f"/api/v1/emails/{email.pk}/")
    assert detail.json()["request_id"] == "checkout-42.a:b_C"
    assert detail["X-Request-ID"] != "checkout-42.a:b_C"  # that request got its own


@pytest.mark.parametrize("bad", ["two words", "x" * 129, "évian", "a/b", "<script>"])
def test_invalid_request_id_is_replaced_not_refused(api, bad):
    """An X-Request-ID outside 1-128 of [A-Za-z0-9._:-] is replaced by a generated one."""
    response = post_email(api, bad)

    assert response.status_code == 202
    assert GENERATED_ID.fullmatch(response["X-Request-ID"])
    assert EmailJob.objects.get().request_id == response["X-Request-ID"]


def test_missing_request_id_is_generated_on_every_answer(client, api, settings):
    """Without the header each answer has a new id: success, 401, 404 and 413 alike."""
    settings.MAILQUEUE_MAX_BODY_BYTES = 10
    answers = [
        client.get("/health/live/"),
        client.get("/api/v1/emails/"),
        api.get("/api/v1/nothing-here/"),
        post_email(api),
    ]

    assert [a.status_code for a in answers] == [200, 401, 404, 413]
    ids = [a["X-Request-ID"] for a in answers]
    assert all(GENERATED_ID.fullmatch(i) for i in ids)
    assert len(set(ids)) == 4


def test_batch_emails_store_the_request_id(api, welcome_template):
    """Every email of a batch carries the id of the request that created the batch."""
    recipients = [{"to": f"user{i}@example.com", "context": {"name": f"U{i}"}} for i in range(3)]
    response = api.post(
        "/api/v1/batches/",
        {"template": "welcome", "recipients": recipients},
        format="json",
        HTTP_X_REQUEST_ID="batch-req-1",
    )

    assert response.status_code == 202
    assert response["X-Request-ID"] == "batch-req-1"
    stored = EmailJob.objects.filter(batch_id=response.json()["id"])
    assert list(stored.values_list("request_id", flat=True)) == ["batch-req-1"] * 3


def test_request_line_names_the_route_not_the_path(api, issued_key, log_output):
    """One http.request line per request: method, route pattern, status, time, client, id; no
    path values and no query string."""
    created = post_email(api, "req-line-1")
    email_id = created.json()["id"]
    api.get(f"/api/v1/emails/{email_id}/?secret=sesame", HTTP_X_REQUEST_ID="req-line-2")

    output = log_output()
    first, second = events(output, "http.request")
    assert set(first) >= REQUIRED
    assert first["logger"] == "mailqueue.requests"
    assert first["level"] == "INFO"
    assert (first["method"], first["route"], first["status"]) == ("POST", "/api/v1/emails/", 202)
    assert first["request_id"] == "req-line-1"
    assert first["client_id"] == issued_key.api_key.client_id
    assert isinstance(first["duration_ms"], int) and first["duration_ms"] >= 0
    assert second["route"] == "/api/v1/emails/<uuid:email_id>/"
    assert second["request_id"] == "req-line-2"
    assert email_id not in output and "sesame" not in output


def test_unauthenticated_request_line_has_no_client_and_django_lines_lose_the_path(
    client, log_output
):
    """A 404 for a token link: no client id, and Django's own warning names the route and
    carries the request id, not the token."""
    client.get("/u/secret-token-123/", HTTP_X_REQUEST_ID="unsub-1")

    lines = json_lines(log_output())
    (request_line,) = [line for line in lines if line["event"] == "http.request"]
    assert "client_id" not in request_line
    assert request_line["route"] == "/u/<str:token>/"
    django_lines = [line for line in lines if line["logger"] == "django.request"]
    assert django_lines, lines
    assert all(line["request_id"] == "unsub-1" for line in django_lines)
    assert "secret-token-123" not in log_output()


def test_outcome_line_carries_the_email_and_its_request(
    api, log_output, work, settings, django_capture_on_commit_callbacks
):
    """The worker writes one email.outcome line with the email's ids, the attempt, the provider,
    the outcome, the claim-to-outcome time and the id of the request that created it."""
    settings.EMAIL_PROVIDERS = ["capture"]
    with django_capture_on_commit_callbacks(execute=True):
        created = post_email(api, "outcome-req-1", to="secret-person@example.com")
    work()

    email = EmailJob.objects.get(pk=created.json()["id"])
    output = log_output()
    (line,) = events(output, "email.outcome")
    assert set(line) >= REQUIRED
    assert line["logger"] == "mailqueue.outcomes"
    assert line["email_id"] == str(email.pk)
    assert line["request_id"] == "outcome-req-1"
    assert line["job_id"] == email.rq_job_id != ""
    assert (line["attempt"], line["provider"], line["outcome"]) == (1, "capture", "sent")
    assert isinstance(line["duration_ms"], int) and 0 <= line["duration_ms"] < 60_000
    assert "batch_id" not in line  # absent fields are omitted, not null
    assert "secret-person" not in output


def test_outcome_line_names_the_recipient_only_when_allowed(
    api, log_output, work, settings, django_capture_on_commit_callbacks
):
    """MAILQUEUE_LOG_RECIPIENTS=1 adds `recipient` to the outcome line."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_LOG_RECIPIENTS = True
    with django_capture_on_commit_callbacks(execute=True):
        post_email(api, to="named-person@example.com")
    work()

    (line,) = events(log_output(), "email.outcome")
    assert line["recipient"] == "named-person@example.com"


def test_outcome_lines_of_a_batch_carry_the_batch(
    api, welcome_template, log_output, work, django_capture_on_commit_callbacks
):
    """Each email of a batch gets its own outcome line with the batch id and the request id."""
    recipients = [{"to": f"user{i}@example.com", "context": {"name": f"U{i}"}} for i in range(2)]
    with django_capture_on_commit_callbacks(execute=True):
        batch = api.post(
            "/api/v1/batches/",
            {"template": "welcome", "recipients": recipients},
            format="json",
            HTTP_X_REQUEST_ID="batch-req-2",
        ).json()
    work()

    lines = events(log_output(), "email.outcome")
    assert len(lines) == 2
    assert {line["batch_id"] for line in lines} == {batch["id"]}
    assert {line["request_id"] for line in lines} == {"batch-req-2"}


def test_outcome_line_is_not_built_when_info_is_filtered_out(
    api, log_output, work, django_capture_on_commit_callbacks
):
    """Below INFO's threshold the outcome line costs nothing and writes nothing."""
    logging.getLogger("mailqueue.outcomes").setLevel(logging.WARNING)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            post_email(api)
        work()
    finally:
        logging.getLogger("mailqueue.outcomes").setLevel(logging.NOTSET)
    assert events(log_output(), "email.outcome") == []


def test_job_context_reaches_other_lines():
    """A line logged while a job runs carries its id; after the job, none."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logs.job")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = job_id_set("drain-default-1")
        logger.warning("email %s: lease lost before sending", "0190")
        job_id_reset(token)
        logger.warning("after the job")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    during, after = json_lines(stream.getvalue())
    assert during["job_id"] == "drain-default-1"
    assert during["event"] == "log"
    assert during["level"] == "WARNING"
    assert "job_id" not in after


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    """A log record as `logger.info(message, *args, extra=extra)` would make it."""
    made = logging.LogRecord("mailqueue.test", logging.INFO, __file__, 1, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def test_exceptions_are_one_json_line_with_addresses_redacted():
    """A traceback goes into `exception`, in the same single line; addresses become
    <redacted> in the message and the traceback."""
    try:
        raise RuntimeError("550 5.1.1 <bob@example.com> unknown user")
    except RuntimeError:
        made = record("send to %s failed", "carol@example.org", exc_info=sys.exc_info())
    line = JsonFormatter().format(made)

    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "send to <redacted> failed"
    assert "RuntimeError: 550 5.1.1 <<redacted>> unknown user" in parsed["exception"]
    assert "example.com" not in line and "example.org" not in line


def test_addresses_are_kept_when_recipients_may_be_logged(settings):
    """MAILQUEUE_LOG_RECIPIENTS=1 turns the redaction off."""
    settings.MAILQUEUE_LOG_RECIPIENTS = True
    line = json.loads(JsonFormatter().format(record("refused %s", "bob@example.com")))
    assert line["message"] == "refused bob@example.com"


def test_text_format_is_readable_with_context_as_key_value():
    """LOG_FORMAT=text: time, level, logger, message, then event and key=value context."""
    line = TextFormatter().format(
        record(
            "email %s",
            "sent",
            event="email.outcome",
            log_fields={"email_id": "e1", "attempt": 1, "provider": ""},
        )
    )

    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO mailqueue\.test email sent "
        r"event=email\.outcome email_id=e1 attempt=1",
        line,
    ), line


def test_unknown_log_format_fails_clearly():
    """LOG_FORMAT other than json or text is refused, naming the variable."""
    assert isinstance(log_formatter("json"), JsonFormatter)
    with pytest.raises(ValueError, match="LOG_FORMAT = 'yaml'"):
        log_formatter("yaml")


@pytest.mark.parametrize(
    ("variables", "expected"),
    [({"DEBUG": "0"}, "json"), ({"DEBUG": "1"}, "text"), ({"LOG_FORMAT": "text"}, "text")],
)
def test_log_format_defaults_to_json_and_to_text_under_debug(monkeypatch, variables, expected):
    """JSON without DEBUG, readable text with it (`make run`), unless LOG_FORMAT says."""
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.delenv("DEBUG", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(environ.Env, "read_env", lambda *args, **kwargs: None)
    namespace = runpy.run_path(str(SETTINGS))
    assert namespace["LOG_FORMAT"] == expected
    assert namespace["LOGGING"]["formatters"]["mailqueue"]["name"] == expected


def test_unknown_log_format_variable_stops_the_process(monkeypatch):
    """LOG_FORMAT=yaml fails at startup, naming the variable."""
    monkeypatch.setenv("LOG_FORMAT", "yaml")
    monkeypatch.setattr(environ.Env, "read_env", lambda *args, **kwargs: None)
    with pytest.raises(ImproperlyConfigured, match="LOG_FORMAT = 'yaml'"):
        runpy.run_path(str(SETTINGS))
