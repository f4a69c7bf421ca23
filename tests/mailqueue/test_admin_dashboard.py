"""The dashboard on the admin home: queues, workers, waiting age, recent sends, hourly chart."""

import re
from datetime import timedelta

import django_rq
import pytest
from django.urls import reverse
from django.utils import timezone

from mailqueue.models import Client, EmailJob, EmailStatus
from mailqueue.scheduling import connection as redis_connection
from mailqueue.selectors.dashboard import dashboard_stats
from mailqueue.services import email_create
from tests.helpers import DOWN_REDIS
from tracking.models import TrackingEvent

pytestmark = pytest.mark.django_db


def element(page: str, element_id: str) -> str:
    """The text inside the element with this id (tags stripped)."""
    match = re.search(rf'<(\w+)[^>]*id="{element_id}"[^>]*>(.*?)</\1>', page, re.S)
    assert match, f"#{element_id} not on the page"
    return re.sub(r"<[^>]+>", "", match.group(2)).strip()


def href(page: str, element_id: str) -> str:
    """The link target of the element with this id."""
    match = re.search(rf'<a[^>]*id="{element_id}"[^>]*href="([^"]*)"', page)
    assert match, f"no link #{element_id}"
    return match.group(1).replace("&amp;", "&")


@pytest.fixture
def activity(db):
    """Events over the last two days, a queued email and a retry that is due."""
    client = Client.objects.create(name="shop")
    email = EmailJob.objects.create(
        client=client, to=["a@example.com"], recipient="a@example.com", status=EmailStatus.SENT
    )
    now = timezone.now()
    moments = {
        "sent": [now - timedelta(minutes=m) for m in (5, 10, 50)]
        + [now - timedelta(hours=5)] * 2
        + [now - timedelta(hours=50)],
        "failed": [now - timedelta(minutes=20), now - timedelta(hours=30)],
        "bounced": [now - timedelta(hours=30)],
        "opened": [now - timedelta(minutes=1)],
    }
    TrackingEvent.objects.bulk_create(
        TrackingEvent(email=email, event_type=event_type, occurred_at=at)
        for event_type, times in moments.items()
        for at in times
    )
    queued = EmailJob.objects.create(
        client=client, to=["q@example.com"], recipient="q@example.com", status=EmailStatus.QUEUED
    )
    EmailJob.objects.filter(pk=queued.pk).update(updated_at=now - timedelta(minutes=7))
    EmailJob.objects.create(
        client=client,
        to=["r@example.com"],
        recipient="r@example.com",
        status=EmailStatus.RETRYING,
        next_attempt_at=now - timedelta(minutes=3),
    )
    return now


def test_stats_count_recent_events_and_bucket_them_per_hour(activity):
    """Counts per window and 48 hourly buckets, oldest first, the current hour last."""
    stats = dashboard_stats(now=activity)
    assert (stats.sent_last_hour, stats.sent_last_day) == (3, 5)
    assert (stats.failed_last_hour, stats.failed_last_day) == (1, 1)
    assert stats.queue_depths == {"high": 0, "default": 0, "low": 0}
    assert stats.queued_emails == {"high": 0, "default": 1, "low": 0}
    assert stats.workers == 0
    assert stats.redis_error == ""
    assert round(stats.oldest_waiting_seconds) == 7 * 60

    assert len(stats.hourly) == 48
    assert stats.hourly[-1].start == activity.replace(minute=0, second=0, microsecond=0)
    assert [b.start for b in stats.hourly] == sorted(b.start for b in stats.hourly)
    totals = {kind: sum(b.counts[kind] for b in stats.hourly) for kind in ("sent", "failed")}
    # The sent event 50 hours ago is outside the chart; opens are not charted.
    assert totals == {"sent": 5, "failed": 2}
    assert sum(b.counts["bounced"] for b in stats.hourly) == 1
    assert set(stats.hourly[0].counts) == {"sent", "failed", "bounced"}


def test_dashboard_renders_numbers_links_and_an_svg_chart(
    admin_client, activity, django_capture_on_commit_callbacks
):
    """The admin home shows the numbers with links and an accessible 48-hour SVG chart."""
    # django-rq enqueues once the transaction commits.
    with django_capture_on_commit_callbacks(execute=True):
        django_rq.get_queue("high").enqueue("mailqueue.tasks.deliver_emails", [])
        django_rq.get_queue("high").enqueue("mailqueue.tasks.deliver_emails", [])
    worker = django_rq.get_worker("default")
    worker.register_birth()
    try:
        response = admin_client.get(reverse("admin:index"))
    finally:
        worker.register_death()
    page = response.content.decode()
    assert response.status_code == 200

    assert element(page, "dashboard-queue-high") == "2"
    assert element(page, "dashboard-queued-default") == "1"
    assert "priority__exact=default" in href(page, "dashboard-queued-default")
    assert element(page, "dashboard-queue-default") == "0"
    assert element(page, "dashboard-queue-low") == "0"
    assert element(page, "dashboard-scheduled") == "0"
    assert element(page, "dashboard-workers") == "1"
    assert element(page, "dashboard-sent-hour") == "3"
    assert element(page, "dashboard-sent-day") == "5"
    assert element(page, "dashboard-failed-hour") == "1"
    assert element(page, "dashboard-failed-day") == "1"
    assert element(page, "dashboard-oldest-waiting") == "7\xa0minutes"
    assert "Redis unavailable" not in page

    assert href(page, "dashboard-queue-high").startswith("/django-rq/queues/")
    assert href(page, "dashboard-workers").startswith("/django-rq/workers/")
    # The sent/failed numbers open exactly the events they counted.
    sent_list = href(page, "dashboard-sent-day")
    assert sent_list.startswith(
        f"{reverse('admin:tracking_trackingevent_changelist')}?event_type__exact=sent"
        "&occurred_at__gte="
    )
    listing = admin_client.get(sent_list)
    assert listing.status_code == 200
    listed = listing.context["cl"].result_list
    assert len(listed) == int(element(page, "dashboard-sent-day"))
    assert {event.event_type for event in listed} == {"sent"}
    assert "e=1" not in listing.wsgi_request.get_full_path()

    chart = page.split('<svg id="dashboard-chart"')[1].split("</svg>")[0]
    assert 'role="img"' in chart
    title = "Sent, failed and bounced emails per hour, last 48 hours"
    assert f'<title id="dashboard-chart-title">{title}</title>' in chart
    assert chart.count('class="dashboard-bucket"') == 48
    assert (
        len(
            re.findall(r'<polyline class="chart-series" data-series="(sent|failed|bounced)"', chart)
        )
        == 3
    )
    assert len(re.findall(r'class="chart-x-label"', chart)) == 8
    # The current hour's tooltip spells out its counts.
    last = dashboard_stats(now=activity).hourly[-1].counts
    expected = f"{last['sent']} sent, {last['failed']} failed, {last['bounced']} bounced"
    assert re.search(rf"<title>[^<]*: {expected}</title></rect>\s*</g>", chart)
    legend = element(page, "dashboard-chart-legend")
    assert "Sent (5)" in legend and "Failed (2)" in legend and "Bounced (1)" in legend
    # The Operations links stay.
    assert 'href="/api/docs/"' in page


def test_dashboard_still_renders_when_redis_is_down(admin_client, activity, settings):
    """Redis unreachable: the Redis numbers say so; the database numbers and chart remain."""
    settings.RQ_QUEUES = DOWN_REDIS
    response = admin_client.get(reverse("admin:index"))
    page = response.content.decode()
    assert response.status_code == 200
    for element_id in ("dashboard-queue-high", "dashboard-scheduled", "dashboard-workers"):
        assert element(page, element_id) == "Redis unavailable"
    assert "127.0.0.1:1" in element(page, "dashboard-redis-error")
    assert element(page, "dashboard-sent-hour") == "3"
    assert page.count('class="dashboard-bucket"') == 48


def test_dashboard_reads_with_a_fixed_number_of_queries(
    admin_client, django_assert_max_num_queries
):
    """The home page's queries do not depend on how many emails or events there are."""
    client = Client.objects.create(name="bulk")
    for index in range(20):
        email_create(client=client, to=[f"u{index}@example.com"], subject="S", text="T")

    # Session, user, 2 for waiting emails, 2 for sent/failed counts, 3 for the chart, admin log,
    # paused queues.
    with django_assert_max_num_queries(13):
        response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert element(response.content.decode(), "dashboard-sent-hour") == "0"


def test_staff_without_email_permission_get_no_dashboard(client, db):
    """The dashboard shows email data, so it needs the permission to view emails."""
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("plain", password="pw", is_staff=True)
    client.login(username="plain", password="pw")
    page = client.get(reverse("admin:index")).content.decode()
    assert 'id="dashboard"' not in page


@pytest.mark.django_db
def test_killed_worker_is_not_alive_on_the_dashboard():
    """A worker killed with -9 stays registered in RQ; the dashboard counts only live ones."""
    worker = django_rq.get_worker("default")
    worker.register_birth()
    assert dashboard_stats().workers == 1

    redis_connection().delete(worker.key)  # what the key's expiry does after a kill -9

    assert dashboard_stats().workers == 0


@pytest.mark.django_db
def test_scheduled_email_past_its_time_counts_as_waiting(issued_key):
    """With no scheduler running, an overdue scheduled email is the oldest waiting one."""
    email = email_create(
        client=issued_key.api_key.client,
        to=["ada@example.com"],
        subject="Hi",
        text="Hello",
        send_at=timezone.now() + timedelta(hours=1),
    )
    due = timezone.now() - timedelta(minutes=10)
    EmailJob.objects.filter(pk=email.pk).update(send_at=due)

    stats = dashboard_stats()

    assert stats.oldest_waiting_at == due
    assert 590 < stats.oldest_waiting_seconds < 700
