"""Double opt-in: a pending subscriber, a confirmation email with a working signed link, a
confirm page that changes nothing on GET and nothing for a bad token."""

import re
import time
from datetime import timedelta

import pytest
from django.core import signing
from django.test import Client as HttpClient
from django.utils import timezone

from mailqueue.models import EmailJob, Priority
from topics.models import Subscriber

pytestmark = pytest.mark.django_db


@pytest.fixture
def confirmed_topic(api, news):
    """`news` with double opt-in."""
    api.patch("/api/v1/topics/news/", {"double_opt_in": True}, format="json")
    return news


def _confirm_path(email: EmailJob) -> str:
    match = re.search(r"https://mail\.acme\.test(/topics/confirm/[^/\s\"]+/)", email.text)
    assert match, email.text
    assert match.group(0) in email.html
    return match.group(1)


def test_subscribe_is_pending_with_a_confirmation_email(confirmed_topic, subscribe, public):
    """201 pending; one high-priority transactional email to the address with the link."""
    response = subscribe(email="Ada@Example.com")

    assert response.status_code == 201
    assert response.json()["status"] == "pending"
    email = EmailJob.objects.get()
    assert email.to == ["ada@example.com"]
    assert (email.priority, email.transactional, email.topic) == (Priority.HIGH, True, "")
    assert "Acme news" in email.subject
    _confirm_path(email)
    # A repeat while pending neither sends another email nor creates a row.
    assert subscribe(email="ada@example.com").status_code == 200
    assert EmailJob.objects.count() == 1


def test_get_shows_a_button_and_post_confirms(confirmed_topic, subscribe, public):
    """GET shows the confirm form and changes nothing; POST makes the subscriber active."""
    subscribe(email="ada@example.com")
    path = _confirm_path(EmailJob.objects.get())
    browser = HttpClient()

    page = browser.get(path)
    assert page.status_code == 200
    assert b'<form method="post">' in page.content
    assert b"a***@example.com" in page.content
    assert Subscriber.objects.get().status == "pending"

    done = browser.post(path)
    assert done.status_code == 200
    assert b"You are subscribed" in done.content
    subscriber = Subscriber.objects.get()
    assert subscriber.status == "active" and subscriber.confirmed_at is not None
    # Confirming twice is harmless.
    assert browser.post(path).status_code == 200


def test_bad_or_expired_token_is_400_and_writes_nothing(
    confirmed_topic, subscribe, public, settings, monkeypatch
):
    """An altered, forged or expired token is a 400 page; the subscriber stays pending."""
    subscribe(email="ada@example.com")
    path = _confirm_path(EmailJob.objects.get())
    browser = HttpClient()

    assert browser.post(path[:-3] + "xx/").status_code == 400
    assert browser.get("/topics/confirm/garbage/").status_code == 400
    forged = signing.dumps([Subscriber.objects.get().pk, "ada@example.com"], salt="other")
    assert browser.post(f"/topics/confirm/{forged}/").status_code == 400
    # Two minutes later, past a one-minute limit.
    settings.MAILQUEUE_TOPICS_CONFIRM_MAX_AGE = 60
    now = time.time()
    monkeypatch.setattr(signing.time, "time", lambda: now + 120)
    assert browser.post(path).status_code == 400
    assert Subscriber.objects.get().status == "pending"


def test_a_subscriber_who_unsubscribed_is_not_confirmed(api, confirmed_topic, subscribe, public):
    """Following the link after unsubscribing does not subscribe again."""
    subscribe(email="ada@example.com")
    path = _confirm_path(EmailJob.objects.get())
    api.delete("/api/v1/topics/news/subscribers/ada@example.com/")

    response = HttpClient().post(path)

    assert response.status_code == 200
    assert Subscriber.objects.get().status == "unsubscribed"


def test_a_repeat_after_the_throttle_resends_the_confirmation(confirmed_topic, subscribe, public):
    """The first link expired (7 days): subscribing again sends a new one that works, but
    repeats within a minute of the last confirmation email send nothing more."""
    assert subscribe(email="ada@example.com").status_code == 201
    Subscriber.objects.update(confirmation_sent_at=timezone.now() - timedelta(seconds=61))

    again = subscribe(email="ada@example.com")
    within_the_minute = subscribe(email="ada@example.com")

    assert (again.status_code, again.json()["status"]) == (200, "pending")
    assert within_the_minute.status_code == 200
    _, second = EmailJob.objects.order_by("created_at")
    assert second.to == ["ada@example.com"] and "Acme news" in second.subject
    assert Subscriber.objects.count() == 1
    done = HttpClient().post(_confirm_path(second))
    assert done.status_code == 200
    assert Subscriber.objects.get().status == "active"
    # Once active, a repeat sends no confirmation.
    assert subscribe(email="ada@example.com").status_code == 200
    assert EmailJob.objects.count() == 2
