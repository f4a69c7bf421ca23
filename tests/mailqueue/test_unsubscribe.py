"""RFC 8058 unsubscribe: the headers of non-transactional email and the public /u/<token>/ page,
through the real HTTP stack and a real SMTP server."""

import re

import pytest
from django.test import Client as HttpClient

from mailqueue.models import CapturedMessage, EmailJob, EmailStatus, Suppression
from mailqueue.services import captured_message_release, email_create, emails_deliver
from mailqueue.unsubscribe import UnsubscribeToken, token_make
from templates_app.services import template_create
from tracking.models import EventType, TrackingEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def public(settings):
    """The public base URL links point at."""
    settings.MAILQUEUE_PUBLIC_URL = "https://mail.acme.test"
    return settings.MAILQUEUE_PUBLIC_URL


def _post_email(api, capture, **body) -> dict:
    body = {"to": ["Ada <ada@example.com>"], "subject": "Hi", "text": "Hello", **body}
    with capture(execute=True):
        response = api.post("/api/v1/emails/", body, format="json")
    assert response.status_code == 202, response.json()
    return response.json()


def _unsubscribe_path(message) -> str:
    match = re.search(r"<https://mail\.acme\.test(/u/[^/>]+/)>", message["List-Unsubscribe"])
    assert match, message["List-Unsubscribe"]
    return match.group(1)


def test_non_transactional_email_carries_one_click_headers(
    api, smtp_sink, public, work, django_capture_on_commit_callbacks
):
    """An email with a topic gets List-Unsubscribe (https link) and List-Unsubscribe-Post; the
    detail shows its topic and that it is not transactional."""
    sent = _post_email(api, django_capture_on_commit_callbacks, topic="news")
    work()
    message = smtp_sink.messages[0].message
    assert _unsubscribe_path(message).startswith("/u/")
    assert "mailto:" not in message["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    detail = api.get(f"/api/v1/emails/{sent['id']}/").json()
    assert (detail["topic"], detail["transactional"]) == ("news", False)


def test_mailto_is_added_only_when_configured(
    api, smtp_sink, public, work, settings, django_capture_on_commit_callbacks
):
    """MAILQUEUE_UNSUBSCRIBE_MAILTO adds a mailto link after the https one."""
    settings.MAILQUEUE_UNSUBSCRIBE_MAILTO = "unsubscribe@acme.test"
    _post_email(api, django_capture_on_commit_callbacks, transactional=False)
    work()
    header = smtp_sink.messages[0].message["List-Unsubscribe"].strip()
    assert header.startswith("<https://mail.acme.test/u/")
    assert header.endswith(", <mailto:unsubscribe@acme.test?subject=unsubscribe>")


def test_transactional_email_has_no_service_headers_but_may_set_its_own(
    api, smtp_sink, work, django_capture_on_commit_callbacks
):
    """Transactional email (the default) gets no unsubscribe headers; its own are kept."""
    _post_email(
        api,
        django_capture_on_commit_callbacks,
        headers={"List-Unsubscribe": "<mailto:u@acme.test>"},
    )
    _post_email(api, django_capture_on_commit_callbacks, to=["bob@example.com"])
    work()
    by_to = {m.rcpt_tos[0]: m.message for m in smtp_sink.messages}
    assert by_to["ada@example.com"]["List-Unsubscribe"] == "<mailto:u@acme.test>"
    assert by_to["bob@example.com"]["List-Unsubscribe"] is None
    assert by_to["bob@example.com"]["List-Unsubscribe-Post"] is None


def test_own_unsubscribe_headers_are_refused_on_non_transactional_email(api):
    """On non-transactional email the headers are the service's: 400 naming `headers`."""
    for body in ({"topic": "news"}, {"transactional": False}):
        response = api.post(
            "/api/v1/emails/",
            {
                "to": ["ada@example.com"],
                "subject": "Hi",
                "text": "Hello",
                "headers": {"list-unsubscribe-post": "List-Unsubscribe=One-Click"},
                **body,
            },
            format="json",
        )
        assert response.status_code == 400
        assert "headers" in response.json()
    assert not EmailJob.objects.exists()


def test_topic_and_transactional_true_conflict(api):
    """An email with a topic is not transactional: saying it is is a 400 naming the field."""
    response = api.post(
        "/api/v1/emails/",
        {
            "to": ["a@example.com"],
            "subject": "H",
            "text": "x",
            "topic": "news",
            "transactional": True,
        },
        format="json",
    )
    assert response.status_code == 400 and "transactional" in response.json()
    bad_topic = api.post(
        "/api/v1/emails/",
        {"to": ["a@example.com"], "subject": "H", "text": "x", "topic": "not a slug!"},
        format="json",
    )
    assert bad_topic.status_code == 400 and "topic" in bad_topic.json()


def test_templates_can_place_the_unsubscribe_link(
    api, smtp_sink, public, work, django_capture_on_commit_callbacks
):
    """`{{ unsubscribe_url }}` renders the same link as the header (empty on transactional)."""
    template_create(
        slug="digest",
        name="Digest",
        subject="Digest",
        html='<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
        text="Unsubscribe: {{ unsubscribe_url }}",
    )
    with django_capture_on_commit_callbacks(execute=True):
        batch = api.post(
            "/api/v1/batches/",
            {"template": "digest", "topic": "digest", "recipients": [{"to": ["ada@example.com"]}]},
            format="json",
        )
    assert batch.status_code == 202, batch.json()
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            "/api/v1/emails/", {"to": ["bob@example.com"], "template": "digest"}, format="json"
        )
    work()
    by_topic = {}
    for received in smtp_sink.messages:
        by_topic[bool(received.message["List-Unsubscribe"])] = received.message
    message = by_topic[True]
    text = message.get_body(("plain",)).get_content()
    assert f"Unsubscribe: https://mail.acme.test{_unsubscribe_path(message)}" in text
    plain = by_topic[False].get_body(("plain",)).get_content()
    assert plain.strip() == "Unsubscribe:"


def test_one_click_post_unsubscribes_at_once(
    api, smtp_sink, public, work, django_capture_on_commit_callbacks
):
    """A mail client's POST (no cookie, no CSRF token) unsubscribes: 200, no redirect, a
    suppression for the topic, an `unsubscribed` event on the email; the next email of that
    topic is suppressed, other email still goes out."""
    sent = _post_email(api, django_capture_on_commit_callbacks, topic="news")
    work()
    path = _unsubscribe_path(smtp_sink.messages[0].message)

    browser = HttpClient(enforce_csrf_checks=True)
    response = browser.post(
        path, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    assert not response.cookies
    entry = Suppression.objects.get()
    assert (entry.address, entry.reason, entry.topic) == ("ada@example.com", "unsubscribe", "news")
    assert entry.client.name == "acme"
    event = TrackingEvent.objects.get(event_type=EventType.UNSUBSCRIBED)
    assert str(event.email_id) == sent["id"]

    again = _post_email(api, django_capture_on_commit_callbacks, topic="news")
    receipt = _post_email(api, django_capture_on_commit_callbacks)
    work()
    assert EmailJob.objects.get(pk=again["id"]).status == EmailStatus.SUPPRESSED
    assert EmailJob.objects.get(pk=receipt["id"]).status == EmailStatus.SENT


def test_multipart_post_and_repeat_are_fine(public, issued_key):
    """Multipart bodies work too; unsubscribing twice keeps one entry."""
    token = token_make(
        UnsubscribeToken(address="ada@example.com", client_id=issued_key.api_key.client_id)
    )
    browser = HttpClient(enforce_csrf_checks=True)
    for _ in range(2):
        response = browser.post(f"/u/{token}/", {"List-Unsubscribe": "One-Click"})
        assert response.status_code == 200
    entry = Suppression.objects.get()
    assert entry.topic == "" and entry.reason == "unsubscribe"
    assert TrackingEvent.objects.filter(email__isnull=True).count() == 2


def test_get_shows_a_confirm_page_and_never_unsubscribes(public, issued_key):
    """GET shows the masked address and a button posting One-Click; nothing is written."""
    token = token_make(
        UnsubscribeToken(
            address="ada@example.com", client_id=issued_key.api_key.client_id, topic="news"
        )
    )
    response = HttpClient().get(f"/u/{token}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "a***@example.com" in page and "ada@example.com" not in page
    assert 'name="List-Unsubscribe" value="One-Click"' in page
    assert not Suppression.objects.exists()
    assert not TrackingEvent.objects.exists()


def test_forged_altered_or_bad_requests_write_nothing(issued_key):
    """A forged or altered token is 404; a POST without One-Click is 400."""
    token = token_make(
        UnsubscribeToken(address="ada@example.com", client_id=issued_key.api_key.client_id)
    )
    browser = HttpClient()
    # A character inside the signature (the last one has bits base64 ignores).
    altered = token[:-10] + ("A" if token[-10] != "A" else "B") + token[-9:]
    # Another first character changes the signed payload (a replace() may find nothing to
    # replace in a given token).
    other_payload = ("X" if token[0] != "X" else "Y") + token[1:]
    for bad in (altered, "forged", other_payload):
        assert browser.get(f"/u/{bad}/").status_code == 404
        assert browser.post(f"/u/{bad}/", {"List-Unsubscribe": "One-Click"}).status_code == 404
    assert browser.post(f"/u/{token}/", {}).status_code == 400
    assert browser.post(f"/u/{token}/", {"List-Unsubscribe": "yes"}).status_code == 400
    assert browser.put(f"/u/{token}/").status_code == 405
    assert not Suppression.objects.exists()


def test_a_non_transactional_email_goes_to_exactly_one_recipient(api):
    """Its unsubscribe link names one address: with several recipients, any of them would
    unsubscribe the first, so such an email is refused (a batch sends one per recipient)."""
    body = {"subject": "News", "text": "Read on", "topic": "news"}
    for recipients in (
        {"to": ["a@example.com", "b@example.com"]},
        {"to": ["a@example.com"], "cc": ["b@example.com"]},
    ):
        response = api.post("/api/v1/emails/", {**body, **recipients}, format="json")
        assert response.status_code == 400
        assert "to" in response.json()
    assert not EmailJob.objects.exists()


def test_a_released_capture_keeps_its_topic(issued_key, settings):
    """Releasing a captured newsletter sends a newsletter: same topic, not transactional, so
    it carries the unsubscribe link and unsubscribes still stop it."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_RELEASE_PROVIDERS = ["console"]
    email = email_create(
        client=issued_key.api_key.client,
        to=["ada@example.com"],
        subject="News",
        text="Read on",
        topic="news",
    )
    emails_deliver(email_ids=[str(email.pk)])

    released = captured_message_release(captured=CapturedMessage.objects.get(email=email))

    assert (released.topic, released.transactional) == ("news", False)
