"""The operator's day in a real browser: write a template, test it, catch a failure, fix, retry.

Each step drives the admin in headless Chromium; between steps the test runs a real RQ worker
(in this process) the way `rqworker` would, against the same database and Redis.
"""

import json
import re

import pytest
from playwright.sync_api import Page, expect

from mailqueue.models import EmailJob, EmailStatus
from tests.helpers import run_worker

pytestmark = pytest.mark.django_db(transaction=True)


def create_template(page: Page, live_server, shots) -> None:
    """Fill the add form, watching the preview follow the typing, then save."""
    page.goto(f"{live_server.url}/admin/templates_app/emailtemplate/add/")
    page.fill("#id_slug", "shipping-notice")
    page.fill("#id_name", "Shipping notice")
    page.fill("#id_variables", json.dumps(["name"]))
    page.fill("#id_sample_context", json.dumps({"name": "Ada"}))
    page.fill("#id_subject", "Your parcel, {{ name }}")
    page.fill("#id_text", "Hello {{ name }}, it ships today.")
    page.fill("#id_html", "<p>Hello <b>{{ name }}</b>, it ships today.</p>")
    expect(page.locator("#template-preview-subject")).to_have_text("Your parcel, Ada")
    expect(page.locator("#template-preview-text")).to_contain_text("Hello Ada, it ships today.")
    html = page.frame_locator("#template-preview-html")
    expect(html.locator("b")).to_have_text("Ada")
    shots.take("preview-first-draft")

    # Keep typing: the preview follows without saving.
    page.fill("#id_subject", "Your parcel is on its way, {{ name }}")
    expect(page.locator("#template-preview-subject")).to_have_text("Your parcel is on its way, Ada")
    expect(html.locator("b")).to_have_text("Ada")

    # A mistake shows up inline, with its line, before any save.
    page.fill("#id_html", "<p>Hello {{ name|shout }}</p>")
    expect(page.locator("#template-preview-errors")).to_contain_text("shout")
    shots.take("preview-error")
    page.fill("#id_html", "<p>Hello <b>{{ name }}</b>, it ships today.</p>")
    expect(page.locator("#template-preview-errors")).to_be_empty()

    page.click("input[name=_continue]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    shots.take("saved")


def test_template_to_test_send_to_capture_inbox(logged_in, live_server, shots):
    """Write a template with a live preview, save it, send a test, and read it in the inbox."""
    page = logged_in
    create_template(page, live_server, shots)

    page.fill("#test-send-to", "qa@example.com")
    page.click("#test-send-button")
    expect(page.locator(".messagelist")).to_contain_text("qa@example.com")
    shots.take("test-send-queued")
    email = EmailJob.objects.get(to=["qa@example.com"])
    assert email.priority == "high"

    run_worker()

    page.goto(f"{live_server.url}/admin/mailqueue/capturedmessage/")
    page.get_by_role("link", name=re.compile("Your parcel is on its way, Ada")).first.click()
    shots.take("captured-message")
    body = page.frame_locator("iframe[sandbox]").first
    expect(body.locator("b")).to_have_text("Ada")
    expect(page.locator("body")).to_contain_text("qa@example.com")
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT


def test_failure_found_in_dead_letters_and_retried_after_the_fix(
    logged_in, live_server, shots, smtp_sink
):
    """An email the SMTP server refuses (550) fails, shows up in dead letters, and once the
    cause is fixed, "retry all in this group" gets it sent."""
    page = logged_in
    smtp_sink.rcpt_replies["bounce@example.com"] = "550 5.1.1 No such user"
    create_template(page, live_server, shots)

    page.fill("#test-send-to", "bounce@example.com")
    page.click("#test-send-button")
    expect(page.locator(".messagelist")).to_contain_text("bounce@example.com")
    run_worker()
    email = EmailJob.objects.get(to=["bounce@example.com"])
    assert email.status == EmailStatus.FAILED

    page.goto(f"{live_server.url}/admin/mailqueue/emailjob/")
    page.click("#dead-letters-link")
    group = page.locator(f"#dead-letter-{email.error_group}")
    expect(group).to_contain_text("550 5.1.1 No such user")
    expect(group).to_contain_text("SMTPRecipientsRefused")
    shots.take("dead-letters")

    # The cause is fixed (the mailbox exists now); retry the whole group.
    del smtp_sink.rcpt_replies["bounce@example.com"]
    group.locator("button.dead-letter-retry").click()
    expect(page.locator(".messagelist")).to_contain_text("Retried 1 email")
    shots.take("group-retried")
    run_worker()

    page.goto(f"{live_server.url}/admin/mailqueue/emailjob/{email.pk}/change/")
    expect(page.locator(".field-status .readonly")).to_have_text("Sent")
    page.click("#email-timeline-link")
    expect(page.locator("body")).to_contain_text("550 5.1.1 No such user")
    expect(page.frame_locator("iframe[sandbox]").first.locator("b")).to_have_text("Ada")
    shots.take("timeline")
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["bounce@example.com"]]
