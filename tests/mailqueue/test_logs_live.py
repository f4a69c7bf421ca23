"""No recipient, subject, body, context or secret in any log line of the real processes.

Runs `runserver`, `rqworker` and `rqscheduler` (tests/live.py) with LOG_FORMAT=json at DEBUG,
sends emails through the HTTP API whose every personal field carries a marker, lets them be
sent, refused, retried and failed against a real SMTP server, then reads every line the three
processes wrote. With MAILQUEUE_LOG_RECIPIENTS=1 the recipient must appear (so the search is
shown able to find it).
"""

import json
import secrets
import urllib.error
import urllib.request

import pytest

from mailqueue.models import EmailJob, EmailStatus
from mailqueue.services import api_key_create
from templates_app.services import template_create
from tests.live import live_env, process_logs, processes, wait_until
from tests.mailqueue.test_retries import free_port
from tests.smtp_sink import SmtpSink

FINAL = (EmailStatus.SENT, EmailStatus.FAILED)


def call(base: str, method: str, path: str, body: dict | None = None, **headers: str) -> tuple:
    """One HTTP request to the web process: (status, headers, parsed JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, response.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return error.code, error.headers, parsed


def web_is_up(base: str) -> bool:
    """The web process answers."""
    try:
        return call(base, "GET", "/health/live/")[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize("log_recipients", [False, True], ids=["default", "recipients_on"])
@pytest.mark.django_db(transaction=True)
def test_no_personal_data_or_secret_in_any_process_log(tmp_path, log_recipients):
    """Every field a caller controls carries a marker; no marker reaches any log line unless
    MAILQUEUE_LOG_RECIPIENTS=1, which lets the recipient (and only it) through."""
    mark = secrets.token_hex(6)
    addresses = {
        "sent": f"sent-{mark}@example.com",
        "refused": f"refused-{mark}@example.com",
        "busy": f"busy-{mark}@example.com",
        "batch": f"batch-{mark}@example.com",
    }
    markers = [
        *addresses.values(),
        f"subject-{mark}",
        f"body-{mark}",
        f"html-{mark}",
        f"context-{mark}",
        f"meta-{mark}",
        f"idem-{mark}",
        f"token-{mark}",
        f"query-{mark}",
        f"cc-{mark}",
    ]
    template_create(
        slug="greeting",
        name="Greeting",
        subject="Hello {{ name }}",
        # A lookup that fails while rendering: Django's template engine logs those at DEBUG.
        html="<p>Hi {{ name }} {{ profile.nickname }}</p>",
        text="Hi {{ name }}",
        variables=["name"],
        sample_context={"name": "Ada"},
    )
    issued = api_key_create(client_name="acme", scopes=["send", "read"])
    # mq_<hex prefix>_<secret>: the secret itself may contain "_".
    key_secret = issued.plaintext.split("_", 2)[2]
    sink = SmtpSink()
    sink.rcpt_replies[addresses["refused"]] = f"550 5.1.1 <{addresses['refused']}> unknown user"
    sink.rcpt_replies[addresses["busy"]] = f"451 4.2.1 <{addresses['busy']}> mailbox busy"
    sink.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = live_env(
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        EMAIL_PROVIDERS="smtp",
        EMAIL_URL=f"smtp://{sink.host}:{sink.port}",
        MAILQUEUE_MAX_ATTEMPTS="2",
        MAILQUEUE_RETRY_BASE_SECONDS="0.2",
        MAILQUEUE_RETRY_MAX_SECONDS="0.5",
        MAILQUEUE_LOG_RECIPIENTS="1" if log_recipients else "0",
    )
    commands = [
        ["runserver", "--noreload", f"127.0.0.1:{port}"],
        ["rqworker", "high", "default", "low"],
        ["rqscheduler"],
    ]
    auth = {"Authorization": f"Bearer {issued.plaintext}"}
    try:
        with processes(commands, env, tmp_path):
            wait_until(lambda: web_is_up(base), timeout=30, what="the web process", logs=tmp_path)
            single = {"subject": f"subject-{mark}", "text": f"body-{mark}", "html": f"html-{mark}"}
            answers = [
                call(
                    base,
                    "POST",
                    "/api/v1/emails/",
                    {
                        "to": [addresses["sent"]],
                        "cc": [f"cc-{mark}@example.com"],
                        "metadata": {"note": f"meta-{mark}"},
                        **single,
                    },
                    **auth,
                    Idempotency_Key=f"idem-{mark}",
                    X_Request_ID=f"live-{mark[:4]}",
                ),
                call(
                    base,
                    "POST",
                    "/api/v1/emails/",
                    {
                        "to": [addresses["refused"]],
                        "template": "greeting",
                        "context": {"name": f"context-{mark}", "profile": {}},
                    },
                    **auth,
                ),
                call(
                    base, "POST", "/api/v1/emails/", {"to": [addresses["busy"]], **single}, **auth
                ),
                call(
                    base,
                    "POST",
                    "/api/v1/batches/",
                    {
                        "template": "greeting",
                        "recipients": [
                            {"to": [addresses["batch"]], "context": {"name": f"context-{mark}"}}
                        ],
                    },
                    **auth,
                ),
            ]
            assert [a[0] for a in answers] == [202, 202, 202, 202], answers
            # Refused at the door: a context that misses a variable, a wrong key, token links.
            bad = call(
                base,
                "POST",
                "/api/v1/emails/",
                {
                    "to": [f"nocontext-{mark}@example.com"],
                    "template": "greeting",
                    "context": {"other": f"context-{mark}"},
                },
                **auth,
            )
            assert bad[0] == 400
            markers.append(f"nocontext-{mark}@example.com")
            assert (
                call(base, "GET", "/api/v1/emails/", Authorization=f"Bearer mq_x_{mark}")[0] == 401
            )
            call(base, "GET", f"/u/token-{mark}/")
            call(base, "GET", f"/t/c/token-{mark}/")
            call(base, "GET", f"/api/v1/emails/?q=query-{mark}", **auth)

            def all_final() -> bool:
                statuses = list(EmailJob.objects.values_list("status", flat=True))
                return len(statuses) == 4 and all(status in FINAL for status in statuses)

            wait_until(all_final, timeout=30, what="every email to be sent or fail", logs=tmp_path)
            request_id = answers[0][1]["X-Request-ID"]
            assert request_id == f"live-{mark[:4]}"
    finally:
        sink.stop()

    statuses = {email.recipient: email.status for email in EmailJob.objects.all()}
    assert statuses == {
        addresses["sent"]: EmailStatus.SENT,
        addresses["refused"]: EmailStatus.FAILED,
        addresses["busy"]: EmailStatus.FAILED,
        addresses["batch"]: EmailStatus.SENT,
    }
    logs = "\n".join(path.read_text(errors="replace") for path in tmp_path.glob("process-*.log"))
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    outcomes = [line for line in lines if line["event"] == "email.outcome"]
    requests = [line for line in lines if line["event"] == "http.request"]
    # The search below looked at real lines: an outcome per attempt, a line per request.
    assert len(outcomes) == 5, process_logs(tmp_path)
    assert len(requests) >= 9
    sent = EmailJob.objects.get(recipient=addresses["sent"])
    (sent_line,) = [line for line in outcomes if line["email_id"] == str(sent.pk)]
    assert sent_line["request_id"] == request_id  # carried from the web process to the worker
    assert sent_line["outcome"] == "sent" and sent_line["provider"] == "smtp"

    found = {marker for marker in markers if marker.lower() in logs.lower()}
    assert key_secret not in logs
    if log_recipients:
        # Only recipients, and only in the outcome lines.
        assert {addresses["sent"], addresses["refused"], addresses["busy"]} <= found
        assert found <= set(addresses.values()) | {f"nocontext-{mark}@example.com"}
        assert {line.get("recipient") for line in outcomes} == {
            addresses["sent"],
            addresses["refused"],
            addresses["busy"],
            addresses["batch"],
        }
    else:
        assert found == set(), [line for line in logs.splitlines() if mark in line][:5]
