"""Open and click tracking end to end: accepted through the API, sent over real SMTP, then
opened and clicked through the public endpoints (the real HTTP stack)."""

import re
from uuid import uuid4

import pytest
from django.core.mail import EmailMultiAlternatives
from django.test import Client

from mailqueue.models import EmailJob, EmailStatus
from mailqueue.providers.mime import fast_message_bytes
from mailqueue.services import email_create
from tests.helpers import run_worker
from tracking.engagement import click_token, content_track, open_token
from tracking.models import EventType, TrackedLink, TrackingEvent

PUBLIC = "https://mq.example.com"
HTML = (
    '<html><body><p>Hello <b>Ada</b>, <a href="https://shop.example/o/1?x=1&amp;y=2">your '
    'order</a> · <a href="mailto:help@shop.example">help</a> · '
    '<a href="https://shop.example/faq">FAQ</a></p></body></html>'
)
TEXT = "Hello Ada, your order: https://shop.example/o/1?x=1&y=2"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _public_url(settings):
    settings.MAILQUEUE_PUBLIC_URL = PUBLIC


def _part(message, content_type: str) -> str:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part.get_content()
    raise AssertionError(f"no {content_type} part")


def _send_tracked(api, django_capture_on_commit_callbacks, **fields) -> EmailJob:
    body = {"to": ["ada@example.com"], "subject": "Your order", "html": HTML, "text": TEXT}
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/emails/", {**body, **fields}, format="json")
    assert response.status_code == 202, response.json()
    with django_capture_on_commit_callbacks(execute=True):
        run_worker()
    return EmailJob.objects.get(pk=response.json()["id"])


def _path(url: str) -> str:
    assert url.startswith(PUBLIC + "/")
    return url.removeprefix(PUBLIC)


def test_tracked_email_is_opened_and_clicked_through_its_links(
    api, smtp_sink, django_capture_on_commit_callbacks
):
    """The received HTML carries a pixel and tracked links; loading and following them is
    recorded on the email, and the click lands on the original URL."""
    email = _send_tracked(
        api, django_capture_on_commit_callbacks, track_opens=True, track_clicks=True
    )
    assert email.status == EmailStatus.SENT
    [received] = smtp_sink.messages
    html = _part(received.message, "text/html")
    # The text part stays as written; the stored HTML is the one the client sent.
    assert _part(received.message, "text/plain").strip() == TEXT
    assert email.html == HTML
    assert 'href="mailto:help@shop.example"' in html
    links = re.findall(r'<a href="([^"]+)"', html)
    assert len(links) == 3 and links[1] == "mailto:help@shop.example"
    assert sorted(TrackedLink.objects.filter(email=email).values_list("position", "url")) == [
        (0, "https://shop.example/o/1?x=1&y=2"),
        (1, "https://shop.example/faq"),
    ]
    [pixel] = re.findall(r'<img src="([^"]+)"', html)
    assert html.endswith('height:1px"></body></html>')

    browser = Client(HTTP_USER_AGENT="Mozilla/5.0 (Test mail client)")
    opened = browser.get(_path(pixel))
    assert opened.status_code == 200
    assert opened["Content-Type"] == "image/gif"
    assert opened.content.startswith(b"GIF89a")
    assert "no-cache" in opened["Cache-Control"] and "no-store" in opened["Cache-Control"]
    email.refresh_from_db()
    first_open = email.opened_at
    assert first_open is not None
    browser.get(_path(pixel))
    email.refresh_from_db()
    assert email.opened_at == first_open
    opens = TrackingEvent.objects.filter(email=email, event_type=EventType.OPENED)
    assert opens.count() == 2
    assert {event.user_agent for event in opens} == {"Mozilla/5.0 (Test mail client)"}
    assert all(event.data == {} for event in opens)  # no IP unless configured

    clicked = browser.get(_path(links[0]))
    assert clicked.status_code == 302
    assert clicked["Location"] == "https://shop.example/o/1?x=1&y=2"
    assert clicked["Referrer-Policy"] == "no-referrer"
    [click] = TrackingEvent.objects.filter(email=email, event_type=EventType.CLICKED)
    assert click.click_url == "https://shop.example/o/1?x=1&y=2"
    assert click.user_agent == "Mozilla/5.0 (Test mail client)"
    email.refresh_from_db()
    assert email.clicked_at is not None
    assert browser.get(_path(links[2]))["Location"] == "https://shop.example/faq"

    detail = api.get(f"/api/v1/emails/{email.pk}/").json()
    assert detail["track_opens"] is True and detail["track_clicks"] is True
    assert [event["type"] for event in detail["events"]].count("clicked") == 2


def test_forged_altered_and_unknown_tokens_are_404_and_never_redirect(
    api, smtp_sink, django_capture_on_commit_callbacks
):
    email = _send_tracked(
        api, django_capture_on_commit_callbacks, track_opens=True, track_clicks=True
    )
    browser = Client()
    good = click_token(email_id=email.pk, position=0)
    value, _, signature = good.rpartition(".")
    bad_tokens = [
        # A character inside the signature (base64 ignores some bits of the last one).
        f"{value}.{signature[:-10]}{'A' if signature[-10] != 'A' else 'B'}{signature[-9:]}",
        f"{email.pk.hex}-1.{signature}",  # another position, same signature
        click_token(email_id=email.pk, position=7),  # signed, but no such link
        click_token(email_id=uuid4(), position=0),  # signed, no such email
        open_token(email_id=email.pk),  # the pixel's token is not a link's
        "https%3A%2F%2Fevil.example",
        "x" * 4000,
    ]
    for token in bad_tokens:
        response = browser.get(f"/t/c/{token}/?next=https://evil.example/")
        assert response.status_code == 404, token
        assert "Location" not in response
    for token in [good, click_token(email_id=uuid4(), position=0), "nope"]:
        response = browser.get(f"/t/o/{token}/")
        assert response.status_code == 404
        assert "no-cache" in response["Cache-Control"]
    assert browser.post(f"/t/c/{good}/").status_code == 405
    assert not TrackingEvent.objects.filter(
        event_type__in=[EventType.OPENED, EventType.CLICKED]
    ).exists()
    email.refresh_from_db()
    assert email.opened_at is None and email.clicked_at is None
    # A HEAD (link scanners) answers like a GET but records nothing.
    assert browser.head(f"/t/c/{good}/").status_code == 302
    assert not TrackingEvent.objects.filter(event_type=EventType.CLICKED).exists()


def test_ip_is_kept_only_when_configured(
    api, smtp_sink, django_capture_on_commit_callbacks, settings
):
    email = _send_tracked(api, django_capture_on_commit_callbacks, track_opens=True)
    settings.MAILQUEUE_TRACK_STORE_IP = True
    Client(REMOTE_ADDR="203.0.113.9").get(f"/t/o/{open_token(email_id=email.pk)}/")
    assert TrackingEvent.objects.get(event_type=EventType.OPENED).data == {"ip": "203.0.113.9"}


def test_untracked_email_is_sent_exactly_as_written(
    api, smtp_sink, django_capture_on_commit_callbacks
):
    """Neither flag (the default): the HTML goes out untouched and no link row is written."""
    email = _send_tracked(api, django_capture_on_commit_callbacks)
    assert (email.track_opens, email.track_clicks) == (False, False)
    [received] = smtp_sink.messages
    assert _part(received.message, "text/html").strip() == HTML
    assert not TrackedLink.objects.exists()


def test_flags_come_from_the_request_then_the_template_then_the_settings(
    issued_key, welcome_template, settings
):
    client = issued_key.api_key.client
    settings.MAILQUEUE_TRACK_OPENS = True
    plain = email_create(client=client, to=["a@example.com"], subject="s", text="t")
    assert (plain.track_opens, plain.track_clicks) == (True, False)

    welcome_template.track_opens = False
    welcome_template.track_clicks = True
    welcome_template.save()
    templated = email_create(
        client=client, to=["a@example.com"], template="welcome", context={"name": "Ada"}
    )
    assert (templated.track_opens, templated.track_clicks) == (False, True)
    asked = email_create(
        client=client,
        to=["a@example.com"],
        template="welcome",
        context={"name": "Ada"},
        track_opens=True,
        track_clicks=False,
    )
    assert (asked.track_opens, asked.track_clicks) == (True, False)


def test_batch_emails_carry_the_batch_flags(api, welcome_template):
    response = api.post(
        "/api/v1/batches/",
        {
            "template": "welcome",
            "recipients": [{"to": ["a@example.com"], "context": {"name": "A"}}],
            "track_clicks": True,
        },
        format="json",
    )
    assert response.status_code == 202, response.json()
    email = EmailJob.objects.get(batch_id=response.json()["id"])
    assert (email.track_opens, email.track_clicks) == (False, True)


def test_bad_flag_is_a_400_naming_the_field(api):
    response = api.post(
        "/api/v1/emails/",
        {"to": ["a@example.com"], "subject": "s", "text": "t", "track_clicks": "maybe"},
        format="json",
    )
    assert response.status_code == 400
    assert "track_clicks" in response.json()


def test_template_api_reads_and_writes_the_flags(api, welcome_template):
    response = api.patch("/api/v1/templates/welcome/", {"track_opens": True}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["track_opens"] is True
    assert response.json()["track_clicks"] is None
    welcome_template.refresh_from_db()
    assert welcome_template.track_opens is True


@pytest.mark.parametrize("long_line", [False, True])
def test_smtp_fast_path_sends_tracked_html_as_django_would(issued_key, settings, long_line):
    """The tracked message keeps the shape the SMTP fast path writes; the fast bytes and
    Django's own serialization carry the same parts."""
    from mailqueue.services.delivery import email_build_message, email_render

    html = HTML + ("<p>" + "x" * 990 + "</p>" if long_line else "")
    email = email_create(
        client=issued_key.api_key.client,
        to=["ada@example.com"],
        subject="Your order",
        html=html,
        text=TEXT,
        track_opens=True,
        track_clicks=True,
    )
    content, links = content_track(email=email, content=email_render(email=email))
    assert len(links) == 2
    message: EmailMultiAlternatives = email_build_message(email=email, content=content)
    fast = fast_message_bytes(message)
    django_bytes = message.message().as_bytes()
    from email import message_from_bytes, policy

    expected = message_from_bytes(django_bytes, policy=policy.default)
    if long_line:
        # A line Django would quote-print: the fast path steps aside.
        assert fast is None
        return
    assert fast is not None
    got = message_from_bytes(fast, policy=policy.default)
    assert _part(got, "text/html") == _part(expected, "text/html") == content.html
    assert _part(got, "text/plain") == _part(expected, "text/plain")
