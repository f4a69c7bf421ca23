"""The admin: rules checked like the API, the dead-letter page with Replay and Delete."""

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from event_sends.models import EventRule
from event_sends.services import event_rule_create
from mailqueue.models import EmailJob
from tests.event_sends.conftest import DEAD, STREAM, booking_event, consume, dead_letters, publish

pytestmark = pytest.mark.django_db
PAGE = "/admin/event_sends/eventrule/dead-letters/"


def test_the_page_url(db):
    """The page hangs off the rules' admin, on the project's admin site."""
    assert reverse("admin:event_sends_dead_letters") == PAGE


def _dead_letter(redis, raw: str) -> str:
    """Publish a poison event and let a consumer dead-letter it; its dead-letter entry id."""
    publish(redis, raw)
    consume()
    return redis.xrevrange(DEAD, count=1)[0][0].decode()


def test_the_page_lists_dead_letters_with_their_reason(admin_client, redis, booking_rule):
    """Each row shows the reason and the raw event, newest first."""
    _dead_letter(redis, '{"id": "x", "type": "booking.moved", "client": "acme"}')
    _dead_letter(redis, "{oops")

    page = admin_client.get(PAGE)

    assert page.status_code == 200
    html = page.content.decode()
    assert html.index("not valid JSON") < html.index("No rule of client")
    assert "{oops" in html
    assert html.count('class="dead-letter"') == 2
    assert "Replay" in html


def test_replay_puts_the_event_back_and_it_is_sent(admin_client, redis, acme, booking_template):
    """An event for a type without a rule is replayed after the rule is added: it leaves the
    dead letters, goes back on the stream, and the next read sends it."""
    entry_id = _dead_letter(redis, json.dumps(booking_event()))
    event_rule_create(
        client=acme,
        event_type="booking.confirmed",
        template="booking-confirmation",
        recipient_path="user.email",
        context_path="booking",
    )
    length = redis.xlen(STREAM)

    response = admin_client.post(PAGE, {"action": "replay", "entry": entry_id}, follow=True)

    assert "1 dead letter(s) put back on mailqueue:events" in response.content.decode()
    assert redis.xlen(DEAD) == 0
    assert redis.xlen(STREAM) == length + 1
    consume()
    assert EmailJob.objects.get().metadata["event_id"] == "evt-1"


def test_delete_removes_the_dead_letter(admin_client, redis, booking_rule):
    """Delete drops it for good; nothing goes back on the stream."""
    entry_id = _dead_letter(redis, "{oops")
    length = redis.xlen(STREAM)

    admin_client.post(PAGE, {"action": "delete", "entry": entry_id})

    assert dead_letters(redis) == []
    assert redis.xlen(STREAM) == length


def test_viewers_see_the_page_but_cannot_replay(client, redis, booking_rule):
    """The view permission shows the list; replaying needs the change permission."""
    entry_id = _dead_letter(redis, "{oops")
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_eventrule"))
    client.force_login(viewer)

    assert client.get(PAGE).status_code == 200
    assert "dead-letter-replay" not in client.get(PAGE).content.decode()
    assert client.post(PAGE, {"action": "replay", "entry": entry_id}).status_code == 403
    assert redis.xlen(DEAD) == 1


def test_staff_without_permission_get_403(client, db):
    """Staff without any rule permission cannot see dead letters."""
    client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))

    assert client.get(PAGE).status_code == 403


def test_the_rule_form_refuses_an_unknown_template(admin_client, acme):
    """The admin form runs the API's checks: the error names the template field."""
    response = admin_client.post(
        "/admin/event_sends/eventrule/add/",
        {
            "client": acme.pk,
            "event_type": "user.registered",
            "template": "missing",
            "recipient_path": "email",
            "context_path": "",
            "priority": "default",
            "tags": "[]",
        },
    )

    assert response.status_code == 200
    assert "No active template with slug" in response.content.decode()
    assert not EventRule.objects.exists()


def test_the_rule_form_creates_a_rule(admin_client, acme, booking_template):
    """A valid rule is stored through the service."""
    response = admin_client.post(
        "/admin/event_sends/eventrule/add/",
        {
            "client": acme.pk,
            "event_type": "booking.confirmed",
            "template": "booking-confirmation",
            "recipient_path": "user.email",
            "context_path": "booking",
            "priority": "high",
            "tags": '["booking"]',
        },
    )

    assert response.status_code == 302
    rule = EventRule.objects.get()
    assert (rule.client, rule.priority, rule.tags) == (acme, "high", ["booking"])


def test_the_rule_list_links_to_dead_letters(admin_client, db):
    """The rules' list page has the Dead letters link."""
    page = admin_client.get("/admin/event_sends/eventrule/")

    assert PAGE in page.content.decode()
