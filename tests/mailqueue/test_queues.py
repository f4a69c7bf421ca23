"""Queue control: the queues' state, pause and resume through the API and the admin, with a real
worker sending (or not) to a real SMTP server."""

from datetime import timedelta

import django_rq
import pytest
from django.urls import reverse
from django.utils import timezone

from mailqueue.models import Client, EmailJob, EmailStatus, QueuePause
from mailqueue.scheduling import DeliveryJob, deliveries_enqueue
from mailqueue.scheduling import connection as redis_connection
from mailqueue.services import email_create
from tests.helpers import run_worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_api(api_for):
    """An API client whose key has the `admin` scope (of another client than `acme`)."""
    return api_for("ops", ["admin"])


def _email(client: Client, **fields) -> EmailJob:
    return EmailJob.objects.create(
        client=client, to=["a@example.com"], recipient="a@example.com", **fields
    )


def test_admin_key_sees_every_clients_queues_with_counts_ages_and_totals(admin_api):
    """Emails of two clients are counted per priority and state; totals add them up."""
    now = timezone.now()
    shop, blog = Client.objects.create(name="shop"), Client.objects.create(name="blog")
    _email(shop, priority="high", status=EmailStatus.QUEUED)
    _email(blog, priority="high", status=EmailStatus.QUEUED)
    _email(shop, priority="default", status=EmailStatus.SCHEDULED, send_at=now + timedelta(days=1))
    _email(blog, priority="default", status=EmailStatus.SENDING)
    _email(
        shop,
        priority="low",
        status=EmailStatus.RETRYING,
        next_attempt_at=now - timedelta(minutes=10),
    )
    _email(shop, priority="low", status=EmailStatus.FAILED)
    _email(shop, priority="low", status=EmailStatus.SENT)
    old_failure = _email(blog, priority="low", status=EmailStatus.FAILED)
    EmailJob.objects.filter(pk=old_failure.pk).update(updated_at=now - timedelta(days=2))
    worker = django_rq.get_worker("high", "default")
    worker.register_birth()

    response = admin_api.get("/api/v1/queues/")

    assert response.status_code == 200
    queues = {queue["name"]: queue for queue in response.json()["queues"]}
    assert list(queues) == ["high", "default", "low"]
    assert {k: queues["high"][k] for k in ("queued", "scheduled", "sending", "workers")} == {
        "queued": 2,
        "scheduled": 0,
        "sending": 0,
        "workers": 1,
    }
    assert queues["high"]["oldest_age_seconds"] >= 0
    assert queues["default"]["scheduled"] == 1 and queues["default"]["sending"] == 1
    # A scheduled send not yet due and an email in a worker's hands are not waiting.
    assert queues["default"]["oldest_age_seconds"] is None
    assert queues["low"]["retrying"] == 1 and queues["low"]["failed_24h"] == 1
    assert queues["low"]["oldest_age_seconds"] >= 600
    assert queues["low"]["workers"] == 0
    assert not any(queue["paused"] for queue in queues.values())
    totals = response.json()["totals"]
    assert totals["queued"] == 2 and totals["failed_24h"] == 1 and totals["workers"] == 1
    assert totals["oldest_age_seconds"] == queues["low"]["oldest_age_seconds"]


def test_queue_control_needs_the_admin_scope(api):
    """A key with every other scope gets 403 naming `admin`, and nothing is paused."""
    for method, url in (
        ("get", "/api/v1/queues/"),
        ("post", "/api/v1/queues/default/pause/"),
        ("post", "/api/v1/queues/default/resume/"),
    ):
        response = getattr(api, method)(url)
        assert response.status_code == 403
        assert "'admin'" in response.json()["detail"]
    assert not QueuePause.objects.exists()


def test_unknown_queue_is_404(admin_api):
    """Only a priority can be paused."""
    response = admin_api.post("/api/v1/queues/urgent/pause/")
    assert response.status_code == 404
    assert "high, default, low" in response.json()["detail"]


def test_paused_queue_accepts_email_sends_none_and_resume_sends_what_waited(
    admin_api, api, smtp_sink, django_capture_on_commit_callbacks
):
    """Pausing `default` holds its emails (even across a Redis flush) while `high` still goes
    out; resume sends the held ones."""
    response = admin_api.post("/api/v1/queues/default/pause/")
    assert response.status_code == 200
    assert response.json()["paused"] is True
    assert response.json()["paused_by"].startswith("api:")

    with django_capture_on_commit_callbacks(execute=True):
        held = api.post(
            "/api/v1/emails/",
            {"to": ["held@example.com"], "subject": "S", "text": "T"},
            format="json",
        )
        urgent = api.post(
            "/api/v1/emails/",
            {"to": ["urgent@example.com"], "subject": "S", "text": "T", "priority": "high"},
            format="json",
        )
    assert held.status_code == 202 and urgent.status_code == 202
    run_worker()
    assert [m.rcpt_tos[0] for m in smtp_sink.messages] == ["urgent@example.com"]
    assert EmailJob.objects.get(pk=held.json()["id"]).status == EmailStatus.QUEUED

    # The pause lives in PostgreSQL: a Redis restart (and a swept drain) does not lift it.
    redis_connection().flushdb()
    django_rq.get_queue("default").enqueue("mailqueue.tasks.drain_queue", "default")
    run_worker()
    assert len(smtp_sink.messages) == 1
    listed = {q["name"]: q for q in admin_api.get("/api/v1/queues/").json()["queues"]}
    assert listed["default"]["paused"] is True and listed["default"]["queued"] == 1

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.post("/api/v1/queues/default/resume/")
    assert response.status_code == 200 and response.json()["paused"] is False
    run_worker()

    assert [m.rcpt_tos[0] for m in smtp_sink.messages] == ["urgent@example.com", "held@example.com"]
    assert EmailJob.objects.get(pk=held.json()["id"]).status == EmailStatus.SENT


def test_retry_coming_due_while_paused_waits_queued_until_resume(
    admin_api, issued_key, smtp_sink, django_capture_on_commit_callbacks
):
    """A scheduled send or retry whose job runs during a pause is not sent: it waits as
    `queued`, and the drain resume requests sends it."""
    now = timezone.now()
    client = issued_key.api_key.client
    due = {
        EmailStatus.SCHEDULED: {"send_at": now - timedelta(seconds=1)},
        EmailStatus.RETRYING: {"next_attempt_at": now - timedelta(seconds=1), "attempts": 1},
    }
    emails = [
        email_create(client=client, to=[f"{status}@example.com"], subject="S", text="T")
        for status in due
    ]
    for email, (status, fields) in zip(emails, due.items(), strict=True):
        EmailJob.objects.filter(pk=email.pk).update(status=status, **fields)
    redis_connection().flushdb()  # only the id jobs below: the drain the create asked for goes
    admin_api.post("/api/v1/queues/default/pause/")
    deliveries_enqueue(
        [
            DeliveryJob(job_id=f"job-{e.pk.hex}", email_ids=(str(e.pk),), priority="default")
            for e in emails
        ]
    )

    run_worker()

    assert smtp_sink.messages == []
    for email in emails:
        email.refresh_from_db()
        assert email.status == EmailStatus.QUEUED and email.next_attempt_at is None
    with django_capture_on_commit_callbacks(execute=True):
        admin_api.post("/api/v1/queues/default/resume/")
    run_worker()
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == [
        "retrying@example.com",
        "scheduled@example.com",
    ]


def test_admin_dashboard_shows_paused_queues_with_pause_and_resume_buttons(admin_client):
    """A superuser pauses `low` from the dashboard, sees it paused, and resumes it."""
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="dashboard-pause-low"' in page and 'id="dashboard-paused-low"' not in page

    response = admin_client.post(reverse("admin:mailqueue_queue_pause", args=["low"]))
    assert response.status_code == 302
    assert QueuePause.objects.get().paused_by == "admin:admin"
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="dashboard-paused-low"' in page and 'id="dashboard-resume-low"' in page
    assert 'id="dashboard-pause-high"' in page

    admin_client.post(reverse("admin:mailqueue_queue_resume", args=["low"]))
    assert not QueuePause.objects.exists()
    assert admin_client.get(reverse("admin:mailqueue_queue_pause", args=["low"])).status_code == 405


def test_staff_without_queue_permissions_see_no_buttons_and_cannot_pause(client, db):
    """Viewing emails is not enough to steer the queues."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_emailjob"))
    client.login(username="viewer", password="pw")
    page = client.get(reverse("admin:index")).content.decode()
    assert 'id="dashboard"' in page and 'id="dashboard-pause-low"' not in page
    assert client.post(reverse("admin:mailqueue_queue_pause", args=["low"])).status_code == 403
    assert not QueuePause.objects.exists()
