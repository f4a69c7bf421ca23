"""Secrets never leave: after their one-time display, API keys and webhook secrets, and always
provider credentials and one-time codes, appear in no API answer (bodies and headers, error
answers included), no admin page, no log line, nor /metrics or /health/.

Distinctive values are planted as each kind of secret and used for real (a key authenticates, an
SMTP server checks the password, Postmark's fake API receives the token, the code is emailed);
then every GET of the API's schema, every page of every registered ModelAdmin (each object's
too), django-rq's pages, the health and metrics endpoints and the captured log records are
searched for them. Each secret is first found where it belongs (the one-time answer, the SMTP
session, the HTTP request to the ESP, the delivered message), which shows the search can find it.
"""

import base64
import io
import json
import re
import secrets
import urllib.request
from collections.abc import Iterable

import django_rq
import pytest
import responses
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.management import call_command
from django.urls import NoReverseMatch, reverse
from rest_framework.test import APIClient

from mailqueue.models import ApiKey, EmailJob, EmailStatus, Priority
from mailqueue.priorities import WEBHOOKS
from mailqueue.services import api_key_create
from otp.models import OneTimeCode
from tests.live import live_env, process_logs, processes, wait_until
from tests.mailqueue.test_logs_live import call, web_is_up
from tests.mailqueue.test_retries import free_port
from tests.smtp_sink import SmtpSink
from tests.tracking.esp_payloads import payload, post_json

KEY_PATTERN = re.compile(r"mq_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
POSTMARK_URL = "https://api.postmarkapp.com/email"
POSTMARK_WEBHOOK = "/webhooks/postmark/tracking/"
SMTP_USER = "mailer"


class AuthSmtpSink(SmtpSink):
    """The tests' SMTP server, requiring AUTH (over plain TCP) with one login and password."""

    def __init__(self, password: str) -> None:
        super().__init__()
        self.password = password
        self.passwords_seen: list[str] = []
        self.controller = Controller(
            self,
            hostname=self.host,
            port=self.port,
            authenticator=self.authenticate,
            auth_require_tls=False,
        )

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        """Accept only SMTP_USER with the password; remember every password tried."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.passwords_seen.append(auth_data.password.decode())
        login_ok = auth_data.login.decode() == SMTP_USER
        return AuthResult(success=login_ok and auth_data.password.decode() == self.password)


def found(text: str, markers: dict[str, str]) -> set[str]:
    """Names of the markers in the text (a numeric code only as a whole number)."""
    names = set()
    for name, value in markers.items():
        if value.isdigit():
            if re.search(rf"(?<![0-9]){value}(?![0-9])", text):
                names.add(name)
        elif value in text:
            names.add(name)
    return names


def answer_text(response) -> str:
    """Everything a client receives: status line, headers and body."""
    headers = "\n".join(f"{name}: {value}" for name, value in response.items())
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return f"{response.status_code}\n{headers}\n{body.decode(errors='replace')}"


class Outputs:
    """What the sweeps read: url -> the text of its answer."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}

    def get(self, client, url: str, **extra) -> None:
        """GET a page; no page may answer 500 (a 403 or 404 is an answer like any other)."""
        client.raise_request_exception = False
        response = client.get(url, **extra)
        assert response.status_code < 500, (url, response.status_code)
        self.pages[url] = answer_text(response)

    def leaks(self, markers: dict[str, str]) -> dict[str, set[str]]:
        """url -> names of the markers its answer shows."""
        return {url: hit for url, text in self.pages.items() if (hit := found(text, markers))}


def api_get_paths() -> list[str]:
    """Every GET path of the API, from its OpenAPI schema (new endpoints are swept too)."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [path for path, operations in schema["paths"].items() if "get" in operations]


def api_sweep(api: APIClient, outputs: Outputs, values: dict[str, list[str]]) -> None:
    """GET every API path, each path parameter filled with every known value of that name."""
    for path in api_get_paths():
        params = re.findall(r"{(\w+)}", path)
        unknown = [name for name in params if name not in values]
        assert not unknown, f"{path}: no test values for {unknown}; add some to sweep it"
        urls = [path]
        for name in params:
            urls = [url.replace(f"{{{name}}}", str(v)) for url in urls for v in values[name]]
        for url in urls:
            outputs.get(api, url)


def admin_sweep(admin_client, outputs: Outputs) -> None:
    """Every GET page of every registered ModelAdmin, for each of its objects, and the site's."""
    outputs.get(admin_client, "/admin/")
    outputs.get(admin_client, "/admin/password_change/")
    for model, model_admin in admin.site._registry.items():
        app_label = model._meta.app_label
        outputs.get(admin_client, f"/admin/{app_label}/")
        # django-rq's Dashboard is an unmanaged model without a table (its pages are swept below).
        objects = list(model._default_manager.all()[:50]) if model._meta.managed else []
        for pattern in model_admin.get_urls():
            params = set(pattern.pattern.regex.groupindex)
            if not pattern.name or params - {"object_id", "number"}:
                continue
            kwargs_list = [{}]
            if "object_id" in params:
                kwargs_list = [{"object_id": quote(obj.pk)} for obj in objects]
            if "number" in params:
                kwargs_list = [{**kwargs, "number": 1} for kwargs in kwargs_list]
            for kwargs in kwargs_list:
                try:
                    url = reverse(f"admin:{pattern.name}", kwargs=kwargs)
                except NoReverseMatch:
                    continue
                outputs.get(admin_client, url)


def rq_sweep(admin_client, outputs: Outputs) -> None:
    """django-rq's dashboard: every queue and registry, and every job's page."""
    from django_rq.settings import get_queues_list

    outputs.get(admin_client, "/django-rq/")
    for index, queue_config in enumerate(get_queues_list()):
        for suffix in ("", "finished/", "failed/", "scheduled/", "started/", "deferred/"):
            outputs.get(admin_client, f"/django-rq/queues/{index}/{suffix}")
        queue = django_rq.get_queue(queue_config["name"])
        job_ids = [
            *queue.job_ids,
            *queue.finished_job_registry.get_job_ids(),
            *queue.failed_job_registry.get_job_ids(),
        ]
        for job_id in job_ids:
            outputs.get(admin_client, f"/django-rq/queues/{index}/{job_id}/")


def public_sweep(client, outputs: Outputs) -> None:
    """The health and metrics endpoints."""
    for url in ("/health/", "/health/live/", "/health/ready/", "/metrics"):
        outputs.get(client, url)


def run_all_queues() -> None:
    """A burst worker over the priority queues and the webhooks queue."""
    django_rq.get_worker(*Priority.values, WEBHOOKS).work(burst=True, logging_level="WARNING")


@pytest.fixture
def planted(settings):
    """Provider credentials set to markers; an SMTP server requiring the marked password."""
    mark = secrets.token_hex(6)
    markers = {
        "postmark token": f"pmtoken{mark}",
        "sendgrid key": f"SG.sgkey{mark}",
        "ses secret": f"sessecret{mark}",
        "anymail webhook secret": f"hookpw{mark}",
        "smtp password": f"smtppw{mark}",
    }
    settings.ANYMAIL = {
        "POSTMARK_SERVER_TOKEN": markers["postmark token"],
        "SENDGRID_API_KEY": markers["sendgrid key"],
        "AMAZON_SES_CLIENT_PARAMS": {
            "aws_access_key_id": "AKIAEXAMPLE",
            "aws_secret_access_key": markers["ses secret"],
        },
        "WEBHOOK_SECRET": f"esp:{markers['anymail webhook secret']}",
    }
    sink = AuthSmtpSink(markers["smtp password"])
    sink.start()
    settings.EMAIL_PROVIDERS = ["smtp"]
    settings.MAILQUEUE_SMTP = {
        "EMAIL_HOST": sink.host,
        "EMAIL_PORT": sink.port,
        "EMAIL_HOST_USER": SMTP_USER,
        "EMAIL_HOST_PASSWORD": markers["smtp password"],
    }
    settings.MAILQUEUE_SMTP_TIMEOUT = 5
    settings.MAILQUEUE_WEBHOOK_ALLOW_PRIVATE = True
    yield sink, markers, mark
    sink.stop()


@pytest.mark.django_db
def test_no_secret_in_any_api_answer_admin_page_log_or_probe(
    planted, settings, admin_client, client, caplog, django_capture_on_commit_callbacks
):
    """Every secret is found where it belongs, then nowhere else: not in any API GET (every
    path and object), error answer, admin page, django-rq page, probe, metrics or log record."""
    sink, markers, mark = planted
    caplog.set_level("DEBUG")
    call_command("load_default_templates", stdout=io.StringIO())
    issued = api_key_create(client_name="acme", scopes=list(ApiKey.Scope.values))
    markers["api key"] = issued.plaintext.split("_", 2)[2]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")

    # The admin shows a key it creates once, right after creating it.
    created = admin_client.post(
        "/admin/mailqueue/apikey/add/",
        {"client": issued.api_key.client_id, "name": "ops", "scopes": ["read"]},
        follow=True,
    )
    assert created.status_code == 200
    (admin_key,) = set(KEY_PATTERN.findall(created.content.decode()))
    markers["admin api key"] = admin_key.split("_", 2)[2]
    assert "admin api key" in found(created.content.decode(), markers)

    # An outbound webhook's secret is in the answer that creates it, only there.
    endpoint = api.post(
        "/api/v1/webhooks/", {"url": "http://127.0.0.1:9/hook", "events": ["*"]}, format="json"
    )
    assert endpoint.status_code == 201, endpoint.content
    markers["webhook secret"] = endpoint.json()["secret"]
    assert "webhook secret" in found(answer_text(endpoint), markers)

    # Postmark, through its (faked) API: the token goes in the request header, and the refusal
    # is recorded on the email.
    settings.EMAIL_PROVIDERS = ["postmark"]
    with responses.RequestsMock() as postmark:
        postmark.add(
            responses.POST,
            POSTMARK_URL,
            status=422,
            json={"ErrorCode": 300, "Message": "Invalid 'To' address: 'nobody'."},
        )
        with django_capture_on_commit_callbacks(execute=True):
            refused = api.post(
                "/api/v1/emails/",
                {"to": ["pm@example.com"], "subject": "Hi", "text": "Hello"},
                format="json",
            )
        run_all_queues()
        token = postmark.calls[0].request.headers["X-Postmark-Server-Token"]
    assert refused.status_code == 202
    assert token == markers["postmark token"]
    settings.EMAIL_PROVIDERS = ["smtp"]

    # A normal email over SMTP with AUTH; the metadata carries a canary the sweeps must find.
    canary = f"canary-{mark}"
    with django_capture_on_commit_callbacks(execute=True):
        sent = api.post(
            "/api/v1/emails/",
            {
                "to": ["ada@example.com"],
                "subject": "Hi",
                "text": "Hello",
                "metadata": {"c": canary},
            },
            format="json",
        )
    assert sent.status_code == 202, sent.content
    run_all_queues()
    assert sink.passwords_seen and set(sink.passwords_seen) == {markers["smtp password"]}

    # The ESP's delivery event, posted with the webhook's basic auth (and once with a wrong one).
    sent_email = EmailJob.objects.get(pk=sent.json()["id"])
    event = payload("postmark_delivery.json", EMAIL_ID=str(sent_email.pk))
    esp_auth = base64.b64encode(f"esp:{markers['anymail webhook secret']}".encode()).decode()
    accepted = post_json(POSTMARK_WEBHOOK, event, HTTP_AUTHORIZATION=f"Basic {esp_auth}")
    assert accepted.status_code == 200, accepted.content
    bad_auth = base64.b64encode(f"esp:{markers['anymail webhook secret']}x".encode()).decode()
    esp_errors = [
        accepted,
        post_json(POSTMARK_WEBHOOK, event, HTTP_AUTHORIZATION=f"Basic {bad_auth}"),
    ]
    assert esp_errors[1].status_code in (400, 401, 403)

    # A one-time code: read where the worker reads it, before the email goes.
    with django_capture_on_commit_callbacks(execute=True):
        issued_code = api.post(
            "/api/v1/otp/", {"email": "otp@example.com", "length": 8}, format="json"
        )
    assert issued_code.status_code == 202, issued_code.content
    otp_row = OneTimeCode.objects.get(pk=issued_code.json()["id"])
    markers["otp code"] = EmailJob.objects.get(pk=otp_row.email_id).context["code"]
    wrong = "0" * 8 if markers["otp code"] != "0" * 8 else "1" * 8
    errors = [
        api.post("/api/v1/otp/verify/", {"email": "otp@example.com", "code": wrong}, format="json"),
        api.post(
            "/api/v1/otp/verify/",
            {"email": "not an address", "code": markers["otp code"]},
            format="json",
        ),
        api.post(
            "/api/v1/otp/verify/", {"email": "otp@example.com", "code": f"x{wrong}"}, format="json"
        ),
    ]

    # Wrong keys: the 401 names neither the key given nor any real one.
    wrong_secret = f"wrongkey{mark}"
    markers["wrong key"] = wrong_secret
    prefix = issued.api_key.prefix
    for authorization in (
        f"Bearer mq_{prefix}_{wrong_secret}",
        f"Bearer mq_{prefix}_{markers['api key']}{wrong_secret}",
        f"Token {wrong_secret}",
        f"Bearer {wrong_secret}",
    ):
        answer = APIClient().get("/api/v1/emails/", HTTP_AUTHORIZATION=authorization)
        assert answer.status_code == 401
        errors.append(answer)
    errors.append(api.post("/api/v1/emails/", b"{not json " + wrong_secret.encode(), "json"))
    errors += esp_errors

    def sweep(outputs: Outputs) -> None:
        values = {
            "email_id": list(EmailJob.objects.values_list("pk", flat=True)),
            "batch_id": ["00000000-0000-0000-0000-000000000000"],
            "endpoint_id": [endpoint.json()["id"]],
            "slug": ["email-verification", "missing"],
            "rule_id": ["00000000-0000-0000-0000-000000000000"],
            "schedule_id": ["00000000-0000-0000-0000-000000000000"],
            "domain_id": ["00000000-0000-0000-0000-000000000000"],
            "email": ["otp@example.com"],
            "address": ["otp@example.com"],
            "name": ["default"],
        }
        api_sweep(api, outputs, values)
        admin_sweep(admin_client, outputs)
        rq_sweep(admin_client, outputs)
        public_sweep(client, outputs)

    # While the code waits to be sent, and once it is sent.
    before = Outputs()
    sweep(before)
    run_all_queues()
    delivered = [received.message.as_string() for received in sink.messages]
    assert any(markers["otp code"] in message for message in delivered)
    verified = api.post(
        "/api/v1/otp/verify/",
        {"email": "otp@example.com", "code": markers["otp code"]},
        format="json",
    )
    assert verified.status_code == 200 and verified.json()["verified"] is True
    errors.append(verified)

    # A wrong SMTP password: the server's refusal is recorded on the email, the password is not.
    markers["wrong smtp password"] = f"badpw{mark}"
    settings.MAILQUEUE_SMTP = {
        **settings.MAILQUEUE_SMTP,
        "EMAIL_HOST_PASSWORD": markers["wrong smtp password"],
    }
    with django_capture_on_commit_callbacks(execute=True):
        refused_auth = api.post(
            "/api/v1/emails/",
            {"to": ["bea@example.com"], "subject": "Hi", "text": "Hello"},
            format="json",
        )
    run_all_queues()
    assert sink.passwords_seen[-1] == markers["wrong smtp password"]
    refused_email = EmailJob.objects.get(pk=refused_auth.json()["id"])
    assert refused_email.status != EmailStatus.SENT
    after = Outputs()
    sweep(after)

    statuses = set(EmailJob.objects.values_list("status", flat=True))
    assert EmailStatus.SENT in statuses
    for outputs in (before, after):
        # The sweeps read real content: the canary is in the API's and the admin's pages.
        canary_pages = {url for url, text in outputs.pages.items() if canary in text}
        assert any(url.startswith("/api/") for url in canary_pages)
        assert any(url.startswith("/admin/") for url in canary_pages)
        assert len(outputs.pages) > 50
        assert outputs.leaks(markers) == {}
    error_leaks = {i: found(answer_text(r), markers) for i, r in enumerate(errors)}
    assert all(not hit for hit in error_leaks.values()), error_leaks

    # mail.log is the test SMTP server's logger: the recipient's side, which reads the message
    # (and so the code). It shows the search finds a secret in a log record; ours hold none.
    def record_text(record) -> str:
        return f"{record.getMessage()} {record.exc_text or ''} {record.__dict__}"

    ours = [record for record in caplog.records if not record.name.startswith("mail.log")]
    theirs = "\n".join(record_text(r) for r in caplog.records if r.name.startswith("mail.log"))
    assert "otp code" in found(theirs, markers)
    assert len(ours) > 20, "the log search read nothing"
    leaking = [(r.name, r.getMessage()[:300]) for r in ours if found(record_text(r), markers)]
    assert leaking == []


def _leaks_in(lines: Iterable[str], markers: dict[str, str]) -> list[str]:
    return [line for line in lines if found(line, markers)]


@pytest.mark.django_db(transaction=True)
def test_no_secret_in_the_logs_of_the_real_web_and_worker_processes(tmp_path):
    """runserver and rqworker at DEBUG with provider credentials, an SMTP password, keys, a
    webhook secret and a one-time code in play: no line of theirs carries one."""
    mark = secrets.token_hex(6)
    markers = {
        "postmark token": f"pmtoken{mark}",
        "sendgrid key": f"SG.sgkey{mark}",
        "anymail webhook secret": f"hookpw{mark}",
        "smtp password": f"smtppw{mark}",
        "wrong key": f"wrongkey{mark}",
    }
    call_command("load_default_templates", stdout=io.StringIO())
    issued = api_key_create(client_name="acme", scopes=list(ApiKey.Scope.values))
    markers["api key"] = issued.plaintext.split("_", 2)[2]
    sink = AuthSmtpSink(markers["smtp password"])
    sink.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = live_env(
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        EMAIL_PROVIDERS="smtp",
        EMAIL_URL=f"smtp://{SMTP_USER}:{markers['smtp password']}@{sink.host}:{sink.port}",
        ANYMAIL_POSTMARK_SERVER_TOKEN=markers["postmark token"],
        ANYMAIL_SENDGRID_API_KEY=markers["sendgrid key"],
        ANYMAIL_WEBHOOK_SECRET=f"esp:{markers['anymail webhook secret']}",
        MAILQUEUE_WEBHOOK_ALLOW_PRIVATE="1",
    )
    commands = [
        ["runserver", "--noreload", f"127.0.0.1:{port}"],
        ["rqworker", *Priority.values, WEBHOOKS],
    ]
    auth = {"Authorization": f"Bearer {issued.plaintext}"}
    try:
        with processes(commands, env, tmp_path):
            wait_until(lambda: web_is_up(base), timeout=30, what="the web process", logs=tmp_path)
            hook = call(
                base,
                "POST",
                "/api/v1/webhooks/",
                {"url": "http://127.0.0.1:9/hook", "events": ["*"]},
                **auth,
            )
            assert hook[0] == 201, hook
            markers["webhook secret"] = hook[2]["secret"]
            sent = call(
                base,
                "POST",
                "/api/v1/emails/",
                {"to": ["ada@example.com"], "subject": "Hi", "text": "Hello"},
                **auth,
            )
            assert sent[0] == 202, sent
            otp = call(base, "POST", "/api/v1/otp/", {"email": "otp@example.com"}, **auth)
            assert otp[0] == 202, otp
            otp_email = OneTimeCode.objects.get(pk=otp[2]["id"]).email_id
            markers["otp code"] = EmailJob.objects.get(pk=otp_email).context["code"]
            wrong = call(base, "GET", "/api/v1/emails/", Authorization=f"Bearer {mark}")
            assert wrong[0] == 401
            call(
                base,
                "GET",
                "/api/v1/emails/",
                Authorization=f"Bearer mq_{issued.api_key.prefix}_{markers['wrong key']}",
            )
            call(base, "POST", "/api/v1/otp/verify/", {"email": "otp@example.com", "code": "x"})
            for path in ("/health/", "/metrics"):
                with urllib.request.urlopen(f"{base}{path}", timeout=10) as probe:
                    assert probe.status == 200
            wait_until(lambda: len(sink.messages) >= 2, timeout=30, what="2 emails", logs=tmp_path)
            wait_until(
                lambda: EmailJob.objects.filter(status=EmailStatus.SENT).count() == 2,
                timeout=30,
                what="both emails sent",
                logs=tmp_path,
            )
            verified = call(
                base,
                "POST",
                "/api/v1/otp/verify/",
                {"email": "otp@example.com", "code": markers["otp code"]},
                **auth,
            )
            assert verified[0] == 200 and verified[2]["verified"] is True
    finally:
        sink.stop()

    assert set(sink.passwords_seen) == {markers["smtp password"]}
    assert any(markers["otp code"] in received.message.as_string() for received in sink.messages)
    logs = "\n".join(path.read_text(errors="replace") for path in tmp_path.glob("process-*.log"))
    lines = [line for line in logs.splitlines() if line.startswith("{")]
    events = {json.loads(line)["event"] for line in lines}
    # The search read real lines of both processes.
    assert {"http.request", "email.outcome"} <= events, process_logs(tmp_path)
    assert _leaks_in(logs.splitlines(), markers) == []
