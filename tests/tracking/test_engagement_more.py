"""Open and click tracking at its edges: outbound webhooks hear of opens and clicks, HTML the
parser cannot read is sent untracked, and hrefs are read the way browsers read them."""

import re

import pytest
from django.test import Client

from client_webhooks.models import WebhookDelivery
from client_webhooks.services import webhook_endpoint_create
from mailqueue.models import EmailStatus
from tests.tracking.test_engagement_flows import PUBLIC, _part, _path, _send_tracked
from tracking.models import TrackedLink

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _public_url(settings):
    settings.MAILQUEUE_PUBLIC_URL = PUBLIC
    settings.MAILQUEUE_WEBHOOK_ALLOW_PRIVATE = True


def test_opens_and_clicks_reach_the_clients_outbound_webhooks(
    api, issued_key, smtp_sink, django_capture_on_commit_callbacks
):
    """An endpoint that wants opens and clicks gets a delivery for each."""
    webhook_endpoint_create(
        client=issued_key.api_key.client,
        url="http://127.0.0.1:9/hooks",
        events=["opened", "clicked"],
    )
    _send_tracked(api, django_capture_on_commit_callbacks, track_opens=True, track_clicks=True)
    html = _part(smtp_sink.messages[0].message, "text/html")
    [pixel] = re.findall(r'<img src="([^"]+)"', html)
    first_link = re.findall(r'<a href="([^"]+)"', html)[0]

    browser = Client()
    assert browser.get(_path(pixel)).status_code == 200
    assert browser.get(_path(first_link)).status_code == 302

    assert sorted(WebhookDelivery.objects.values_list("event_type", flat=True)) == [
        "clicked",
        "opened",
    ]


def test_html_the_parser_cannot_read_is_sent_untracked(
    api, smtp_sink, django_capture_on_commit_callbacks
):
    """Outlook's conditional comments break Python's HTML parser: the email still goes out, as
    written, without tracking."""
    html = (
        '<html><body><![ if !mso ]><a href="https://shop.example/">shop</a>'
        "<![ endif ]></body></html>"
    )
    email = _send_tracked(
        api, django_capture_on_commit_callbacks, html=html, track_opens=True, track_clicks=True
    )

    assert email.status == EmailStatus.SENT
    assert 'href="https://shop.example/"' in _part(smtp_sink.messages[0].message, "text/html")
    assert not TrackedLink.objects.exists()


def test_a_link_is_stored_as_the_browser_would_follow_it(
    api, smtp_sink, django_capture_on_commit_callbacks
):
    """Tabs and newlines inside an href are dropped, as browsers do, so the click lands where a
    click on the untracked link would have."""
    html = '<p><a href=" https://shop.example/or\nder?id=1\t ">order</a></p>'
    _send_tracked(api, django_capture_on_commit_callbacks, html=html, track_clicks=True)

    assert list(TrackedLink.objects.values_list("url", flat=True)) == [
        "https://shop.example/order?id=1"
    ]
