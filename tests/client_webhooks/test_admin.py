"""The deliveries admin: replays need the change permission on deliveries, not just view."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client as BrowserClient
from django.urls import reverse
from django.utils import timezone

from client_webhooks.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from mailqueue.models import Client

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:client_webhooks_webhookdelivery_changelist"
REPLAY_SINCE = "admin:client_webhooks_webhookdelivery_replay_since"


@pytest.fixture
def delivered() -> WebhookDelivery:
    """A delivery its endpoint has received."""
    client = Client.objects.create(name="billing")
    endpoint = WebhookEndpoint.objects.create(
        client=client, url="https://app.example.com/hooks", events=["*"], secret="whsec_test"
    )
    return WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_id=uuid.uuid4(),
        event_type="delivered",
        payload={},
        status=WebhookDeliveryStatus.DELIVERED,
        attempts=1,
        delivered_at=timezone.now(),
    )


def staff_with(*codenames: str) -> BrowserClient:
    """A browser logged in as a staff user with only these delivery permissions."""
    user = User.objects.create_user(f"staff-{'-'.join(codenames)}", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="client_webhooks", codename__in=codenames)
    )
    browser = BrowserClient()
    browser.force_login(user)
    return browser


def replay_selected(browser: BrowserClient, delivery: WebhookDelivery):
    """POST the list's replay action for one delivery."""
    return browser.post(
        reverse(CHANGELIST), {"action": "replay", "_selected_action": [delivery.pk]}
    )


def offered_actions(page) -> set[str]:
    """The actions the change list offers (no action form when there is none)."""
    form = page.context["action_form"]
    return set() if form is None else set(dict(form.fields["action"].choices))


def since_form() -> dict:
    """The replay-since form, from an hour ago."""
    return {"since": (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")}


def test_view_permission_alone_cannot_replay(delivered):
    """A staff user who may only view deliveries sees no replay action or link, and replaying
    anyway (the action, the replay-since form) changes nothing."""
    browser = staff_with("view_webhookdelivery")

    page = browser.get(reverse(CHANGELIST))
    assert page.status_code == 200
    assert "replay" not in offered_actions(page)
    assert reverse(REPLAY_SINCE) not in page.content.decode()

    replay_selected(browser, delivered)
    assert browser.get(reverse(REPLAY_SINCE)).status_code == 403
    assert browser.post(reverse(REPLAY_SINCE), since_form()).status_code == 403

    delivered.refresh_from_db()
    assert delivered.status == WebhookDeliveryStatus.DELIVERED and delivered.attempts == 1


def test_change_permission_can_replay(delivered):
    """A staff user who may change deliveries replays selected ones and everything since a
    time; the deliveries are pending again with a fresh series of attempts."""
    browser = staff_with("view_webhookdelivery", "change_webhookdelivery")

    page = browser.get(reverse(CHANGELIST))
    assert "replay" in offered_actions(page)
    assert reverse(REPLAY_SINCE) in page.content.decode()

    assert replay_selected(browser, delivered).status_code == 302
    delivered.refresh_from_db()
    assert delivered.status == WebhookDeliveryStatus.PENDING and delivered.attempts == 0

    WebhookDelivery.objects.filter(pk=delivered.pk).update(
        status=WebhookDeliveryStatus.DELIVERED, attempts=1
    )
    assert browser.get(reverse(REPLAY_SINCE)).status_code == 200
    response = browser.post(reverse(REPLAY_SINCE), since_form())
    assert response.status_code == 302 and response.url == reverse(CHANGELIST)
    delivered.refresh_from_db()
    assert delivered.status == WebhookDeliveryStatus.PENDING and delivered.attempts == 0
