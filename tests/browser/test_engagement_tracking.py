"""Click tracking in a real browser: follow a tracked link of a captured message, then find
the click on the email's admin timeline."""

import time

import pytest
from playwright.sync_api import expect

from mailqueue.models import EmailJob, EmailStatus
from mailqueue.services import email_create
from mailqueue.services.emails import admin_sender_client
from tests.helpers import run_worker
from tracking.models import EventType, TrackingEvent

pytestmark = pytest.mark.django_db(transaction=True)


def _wait_for_click(email: EmailJob) -> None:
    """The iframe's navigation reaches the live server on its own thread: wait for its write."""
    deadline = time.monotonic() + 10
    while not TrackingEvent.objects.filter(email=email, event_type=EventType.CLICKED).exists():
        assert time.monotonic() < deadline, "the click never reached the server"
        time.sleep(0.1)


def test_tracked_link_in_captured_message_shows_on_timeline(
    logged_in, live_server, shots, settings
):
    """Send a tracked email to the capture inbox, click its link in the admin's preview, and
    see the click, with its URL, on the email's timeline."""
    page = logged_in
    settings.MAILQUEUE_PUBLIC_URL = live_server.url
    target = f"{live_server.url}/health/"
    email = email_create(
        client=admin_sender_client(),
        to=["reader@example.com"],
        subject="Your tracked order",
        html=f'<html><body><p>See <a href="{target}">your order</a>.</p></body></html>',
        text=f"See your order: {target}",
        track_clicks=True,
    )
    run_worker()
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT

    page.goto(f"{live_server.url}/admin/mailqueue/capturedmessage/")
    page.get_by_role("link", name="Your tracked order").first.click()
    shots.take("captured-message")
    preview = page.frame_locator("iframe[sandbox]").first
    link = preview.get_by_role("link", name="your order")
    href = link.get_attribute("href")
    assert href.startswith(f"{live_server.url}/t/c/")
    link.click()
    _wait_for_click(email)
    shots.take("link-followed")

    page.goto(f"{live_server.url}/admin/mailqueue/emailjob/{email.pk}/change/")
    page.click("#email-timeline-link")
    expect(page.locator("#email-timeline")).to_contain_text("Clicked")
    expect(page.locator("#email-timeline")).to_contain_text(target)
    shots.take("timeline")
    email.refresh_from_db()
    assert email.clicked_at is not None
