"""Test keys: their emails go the whole way through the pipeline to the simulator (the capture
inbox), never to a provider, and the simulator's addresses produce their events."""

from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from mailqueue.errors import InvalidTransition
from mailqueue.models import ApiKey, CapturedMessage, EmailJob, Suppression
from mailqueue.services import api_key_create, captured_message_release
from tests.helpers import run_worker
from tracking.models import TrackingEvent

EMAILS = "/api/v1/emails/"


@pytest.fixture
def test_api(db) -> APIClient:
    """An API client with a test key (scope send and read)."""
    issued = api_key_create(client_name="app-ci", scopes=["send", "read"], is_test=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    return client


def _send(api: APIClient, to: str) -> str:
    response = api.post(EMAILS, {"to": [to], "subject": "Hi", "text": "Hello"}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def _events(email_id: str) -> list[str]:
    return sorted(
        TrackingEvent.objects.filter(email_id=email_id).values_list("event_type", flat=True)
    )


def test_test_key_emails_reach_the_simulator_and_never_the_provider(
    test_api, smtp_sink, django_capture_on_commit_callbacks
):
    """With the smtp provider configured, a test key's emails are captured, not sent; plain
    addresses get `delivered`, bounce@ a bounce, complaint@ a complaint, reject@ fails; no
    suppression is added, so the next test run sees the same answers."""
    with django_capture_on_commit_callbacks(execute=True):
        plain = _send(test_api, "ada@example.com")
        bounce = _send(test_api, "bounce@simulator.mailqueue")
        complaint = _send(test_api, "complaint@simulator.mailqueue")
        reject = _send(test_api, "reject@simulator.mailqueue")

    run_worker()

    assert smtp_sink.messages == []
    emails = {str(email.pk): email for email in EmailJob.objects.all()}
    for email_id in (plain, bounce, complaint):
        assert emails[email_id].status == "sent"
        assert emails[email_id].provider == "simulator"
    assert CapturedMessage.objects.filter(email_id__in=[plain, bounce, complaint]).count() == 3
    assert emails[reject].status == "failed"
    assert "simulated rejection" in emails[reject].last_error

    assert "delivered" in _events(plain)
    assert "bounced" in _events(bounce)
    assert emails[bounce].bounced_at is not None
    assert {"delivered", "complained"} <= set(_events(complaint))
    assert emails[complaint].complained_at is not None
    assert not Suppression.objects.exists()

    # A live key of the same client still delivers for real.
    live = api_key_create(client_name="app-ci", scopes=["send"]).plaintext
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {live}")
    with django_capture_on_commit_callbacks(execute=True):
        _send(api, "bob@example.com")
    run_worker()
    assert [message.rcpt_tos for message in smtp_sink.messages] == [["bob@example.com"]]


def test_test_key_batches_go_to_the_simulator(test_api, welcome_template):
    """Every email of a batch made with a test key is routed to the simulator."""
    response = test_api.post(
        "/api/v1/batches/",
        {
            "template": welcome_template.slug,
            "recipients": [
                {"to": "a@example.com", "context": {"name": "A"}},
                {"to": "b@example.com", "context": {"name": "B"}},
            ],
            "context": {"company_name": "Acme", "login_url": "https://example.com"},
        },
        format="json",
    )

    assert response.status_code == 202, response.json()
    assert list(EmailJob.objects.values_list("providers", flat=True)) == [["simulator"]] * 2


def test_create_api_key_makes_a_test_key(db):
    """`create_api_key --test` makes a test key and says so."""
    out = StringIO()
    call_command("create_api_key", "app-ci", "--test", stdout=out)

    key = ApiKey.objects.get()
    assert key.is_test
    assert "test key" in out.getvalue()


def test_test_key_cannot_create_what_sends_later(db):
    """Schedules and event rules send outside the request, where the simulator cannot follow:
    a test key (even with every scope) gets 403 saying why."""
    issued = api_key_create(client_name="app-ci", scopes=["send", "templates"], is_test=True)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    schedule = api.post("/api/v1/schedules/", {}, format="json")
    rule = api.post("/api/v1/event-rules/", {}, format="json")

    for response in (schedule, rule):
        assert response.status_code == 403
        assert "test key" in response.json()["detail"]


def test_test_and_live_keys_never_share_an_idempotency_key(
    test_api, django_capture_on_commit_callbacks
):
    """A live request with the key a test request used is a new email, not the simulated
    answer replayed; a test key's captured message is never released for real."""
    headers = {"Idempotency-Key": "order-1"}
    body = {"to": ["ada@example.com"], "subject": "Hi", "text": "Hello"}
    with django_capture_on_commit_callbacks(execute=True):
        simulated = test_api.post(EMAILS, body, format="json", headers=headers).json()["id"]
    live_key = api_key_create(client_name="app-ci", scopes=["send"]).plaintext
    live = APIClient()
    live.credentials(HTTP_AUTHORIZATION=f"Bearer {live_key}")
    real = live.post(EMAILS, body, format="json", headers=headers)

    assert real.status_code == 202
    assert real.json()["id"] != simulated
    assert EmailJob.objects.get(pk=real.json()["id"]).providers == []

    run_worker()
    captured = CapturedMessage.objects.get(email_id=simulated)
    with pytest.raises(InvalidTransition):
        captured_message_release(captured=captured)
