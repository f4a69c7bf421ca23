"""The consumer loop: events become emails once, poison events become dead letters, entries
of a dead consumer are taken over."""

import json
import time

import django_rq
import pytest

from event_sends import streams
from event_sends.consumer import EventConsumer
from event_sends.models import HandledEvent
from event_sends.services import dead_letters_replay, event_handle, event_rule_create
from mailqueue.liveness import live_consumer_count
from mailqueue.models import EmailJob, EmailStatus
from templates_app.services import template_create
from tests.event_sends.conftest import (
    STREAM,
    booking_event,
    consume,
    dead_letters,
    pending_count,
    publish,
)

pytestmark = pytest.mark.django_db


def test_an_event_becomes_the_rules_email(redis, booking_rule, django_capture_on_commit_callbacks):
    """The email goes to the address at recipient_path, rendered from the data at context_path,
    with the rule's template, priority and tags, and its delivery is requested on commit."""
    entry_id = publish(redis, booking_event())

    with django_capture_on_commit_callbacks(execute=True):
        consume()

    email = EmailJob.objects.get()
    assert email.to == ["ada@example.com"]
    assert email.template.slug == "booking-confirmation"
    assert email.context == {"name": "Ada", "service": "haircut"}
    assert email.subject == "Ada, your haircut is booked"
    assert email.priority == "high"
    assert email.tags == ["booking", "events"]
    assert email.client.name == "acme"
    assert email.status == EmailStatus.QUEUED
    assert email.metadata["event_id"] == "evt-1"
    assert len(django_rq.get_queue("high")) == 1  # the drain of the high queue
    handled = HandledEvent.objects.get()
    assert (handled.event_id, handled.rule, handled.email_id) == ("evt-1", booking_rule, email.id)
    assert pending_count(redis) == 0, "acknowledged once the email was committed"
    assert redis.xlen("mailqueue:events:dead") == 0
    assert entry_id


def test_the_whole_data_is_the_context_without_context_path(redis, acme, booking_template):
    """An empty context_path renders with all of the event's data."""
    event_rule_create(
        client=acme,
        event_type="booking.confirmed",
        template="booking-confirmation",
        recipient_path="email",
    )
    data = {"email": "bob@example.com", "name": "Bob", "service": "massage"}
    publish(redis, booking_event(data=data))

    consume()

    email = EmailJob.objects.get()
    assert (email.to, email.context, email.priority) == (["bob@example.com"], data, "default")


def test_a_redelivered_event_creates_no_second_email(redis, booking_rule):
    """The same event id added again, even after the first was long acknowledged: no email."""
    publish(redis, booking_event("evt-7"))
    consume()
    publish(redis, booking_event("evt-7"))
    publish(redis, booking_event("evt-8"))

    consume()

    assert sorted(EmailJob.objects.values_list("metadata__event_id", flat=True)) == [
        "evt-7",
        "evt-8",
    ]
    assert pending_count(redis) == 0
    assert redis.xlen("mailqueue:events:dead") == 0


def test_two_rules_on_one_event_type_both_fire_once(redis, acme, booking_rule):
    """A second rule (a notice to the venue) sends its own email; a repeat sends neither."""
    template_create(
        slug="venue-notice",
        name="Venue notice",
        subject="New booking: {{ service }}",
        text="{{ name }} booked {{ service }}",
        variables=["service"],
    )
    event_rule_create(
        client=acme,
        event_type="booking.confirmed",
        template="venue-notice",
        recipient_path="venue.email",
        context_path="booking",
    )
    event = booking_event(data={**booking_event()["data"], "venue": {"email": "desk@venue.test"}})
    publish(redis, event)
    publish(redis, event)

    consume()

    assert sorted(EmailJob.objects.values_list("to", "template__slug")) == [
        (["ada@example.com"], "booking-confirmation"),
        (["desk@venue.test"], "venue-notice"),
    ]
    assert HandledEvent.objects.count() == 2


def test_the_same_event_id_of_another_client_is_another_event(redis, acme, booking_rule):
    """Event ids are per client: beta's evt-1 is not acme's evt-1."""
    beta = type(acme).objects.create(name="beta")
    event_rule_create(
        client=beta,
        event_type="booking.confirmed",
        template="booking-confirmation",
        recipient_path="user.email",
        context_path="booking",
    )
    publish(redis, booking_event("evt-1"))
    publish(redis, booking_event("evt-1", client="beta"))

    consume()

    assert sorted(EmailJob.objects.values_list("client__name", flat=True)) == ["acme", "beta"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps(["a", "list"]), "must be a JSON object"),
        (json.dumps({"type": "booking.confirmed", "client": "acme"}), "'id'"),
        (json.dumps({"id": "e", "client": "acme", "data": {}}), "'type'"),
        (json.dumps({"id": "e", "type": "booking.confirmed", "data": {}}), "'client'"),
        (json.dumps(booking_event(client="nobody")), "Unknown client 'nobody'"),
        (json.dumps(booking_event(type="booking.moved")), "No rule"),
        (json.dumps(booking_event(data={"booking": {"name": "A"}})), "No recipient at data.user"),
        (
            json.dumps(booking_event(data={"user": {"email": "not-an-address"}, "booking": {}})),
            "not a valid email address",
        ),
        (
            json.dumps(booking_event(data={"user": {"email": "a@example.com"}, "booking": {}})),
            "Missing required template variable",
        ),
    ],
)
def test_poison_events_go_to_the_dead_letter_stream_and_are_acked(redis, booking_rule, raw, reason):
    """Each lands in mailqueue:events:dead with its reason and the raw entry; nothing is sent,
    nothing stays pending, and the consumer goes on with the next event."""
    entry_id = publish(redis, raw)
    publish(redis, booking_event("good"))

    consume(name="consumer-a")

    (letter,) = dead_letters(redis)
    assert reason in letter["reason"]
    assert letter["event"] == raw
    assert letter["stream_id"] == entry_id
    assert letter["consumer"] == "consumer-a"
    assert letter["failed_at"]
    assert pending_count(redis) == 0
    assert list(EmailJob.objects.values_list("metadata__event_id", flat=True)) == ["good"]


def test_an_entry_without_an_event_field_is_a_dead_letter(redis, booking_rule):
    """A producer that used another field name is told so."""
    redis.xadd(STREAM, {"payload": "{}"})

    consume()

    assert "no 'event' field" in dead_letters(redis)[0]["reason"]


def test_a_failing_rule_is_dead_lettered_and_its_replay_sends_only_it(redis, acme, booking_rule):
    """One rule of two lacks its recipient: the other still sends; once the rule is fixed, the
    replayed event sends only the missing email."""
    template_create(slug="venue-notice", name="Venue", subject="Booking", text="New booking")
    venue_rule = event_rule_create(
        client=acme,
        event_type="booking.confirmed",
        template="venue-notice",
        recipient_path="venue.email",
    )
    publish(redis, booking_event(data={**booking_event()["data"], "desk": "desk@venue.test"}))

    consume()

    assert list(EmailJob.objects.values_list("template__slug", flat=True)) == [
        "booking-confirmation"
    ]
    (letter,) = dead_letters(redis)
    assert f"rule {venue_rule.pk}" in letter["reason"]
    assert "No recipient at data.venue.email" in letter["reason"]

    venue_rule.recipient_path = "desk"
    venue_rule.save()
    (entry_id,) = [entry_id.decode() for entry_id, _ in redis.xrange("mailqueue:events:dead")]
    assert dead_letters_replay(entry_ids=[entry_id]) == 1
    consume()

    assert sorted(EmailJob.objects.values_list("template__slug", flat=True)) == [
        "booking-confirmation",
        "venue-notice",
    ]
    assert redis.xlen("mailqueue:events:dead") == 0


def test_a_dead_consumers_entry_is_taken_over_after_the_idle_time(redis, booking_rule, settings):
    """A consumer read an entry and died before acknowledging it: another consumer claims it
    once it has been idle long enough, and the email is created exactly once."""
    settings.MAILQUEUE_EVENTS_CLAIM_IDLE_SECONDS = 0.3
    publish(redis, booking_event("evt-orphan"))
    consume(steps=1, name="survivor")
    assert EmailJob.objects.count() == 1

    # Another consumer reads the next entry and dies without acknowledging it.
    publish(redis, booking_event("evt-crash"))
    read = redis.xreadgroup("mailqueue", "crashed", {STREAM: ">"}, count=1)
    assert read and pending_count(redis) == 1

    consume(steps=2, name="survivor")
    assert EmailJob.objects.count() == 1, "not taken over before the idle time"
    assert pending_count(redis) == 1

    time.sleep(0.35)
    consume(steps=2, name="survivor")

    assert sorted(EmailJob.objects.values_list("metadata__event_id", flat=True)) == [
        "evt-crash",
        "evt-orphan",
    ]
    assert pending_count(redis) == 0


def test_a_taken_over_entry_whose_emails_were_committed_is_not_sent_again(
    redis, booking_rule, settings
):
    """The dead consumer had committed the email but died before XACK: the take-over finds the
    handled event and only acknowledges."""
    settings.MAILQUEUE_EVENTS_CLAIM_IDLE_SECONDS = 0.2
    publish(redis, booking_event("evt-half"))
    streams.group_ensure(redis)
    (entry,) = streams.entries_read(redis, consumer="crashed", count=1, block_ms=10)
    event_handle(raw=entry.raw)  # committed, then the process died before its XACK
    time.sleep(0.25)

    consume(steps=2, name="survivor")

    assert EmailJob.objects.count() == 1
    assert pending_count(redis) == 0


def test_an_entry_read_too_often_is_dead_lettered(redis, booking_rule, settings):
    """An entry that keeps failing without ever being handled stops being retried."""
    settings.MAILQUEUE_EVENTS_CLAIM_IDLE_SECONDS = 0
    settings.MAILQUEUE_EVENTS_MAX_DELIVERIES = 2
    publish(redis, booking_event())
    streams.group_ensure(redis)
    streams.entries_read(redis, consumer="crashed-1", count=1, block_ms=10)
    assert streams.entries_claim(redis, consumer="crashed-2", count=1)[1]

    consume(steps=1, name="survivor")

    (letter,) = dead_letters(redis)
    assert "Read 3 times" in letter["reason"]
    assert EmailJob.objects.count() == 0
    assert pending_count(redis) == 0


def test_events_published_before_the_first_consumer_are_handled(redis, booking_rule):
    """The group starts at the beginning of the stream, not at its end."""
    publish(redis, booking_event("early"))
    assert not redis.exists("mailqueue:events") or not redis.xinfo_groups(STREAM)

    consume()

    assert EmailJob.objects.get().metadata["event_id"] == "early"


def test_the_consumer_announces_itself_and_leaves_when_stopped(redis, booking_rule):
    """While running it renews a heartbeat key (health checks); stopped with nothing pending,
    it leaves the group."""
    publish(redis, booking_event())
    consumer = EventConsumer(name="hb-test")
    consumer.step()
    assert live_consumer_count(redis) == 1
    assert [row["name"] for row in redis.xinfo_consumers(STREAM, "mailqueue")] == [b"hb-test"]

    consumer.request_stop()
    consumer.run()

    assert live_consumer_count(redis) == 0
    assert redis.xinfo_consumers(STREAM, "mailqueue") == []


def test_redis_down_is_retried_with_a_log_line(settings, caplog, booking_rule):
    """Unreachable Redis: a clear error line per attempt with the delay, no crash."""
    settings.RQ_QUEUES = {
        **settings.RQ_QUEUES,
        "default": {**settings.RQ_QUEUES["default"], "URL": "redis://127.0.0.1:1/0"},
    }
    consumer = EventConsumer(name="offline")
    consumer._stopping.wait = lambda delay: False  # do not actually sleep the backoff

    consumer.run(max_steps=3)

    lines = [r.getMessage() for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(lines) == 3
    assert "retrying in 1 s (failure 1)" in lines[0]
    assert "retrying in 4 s (failure 3)" in lines[2]


def test_a_body_the_event_cannot_render_is_dead_lettered_and_creates_no_email(
    redis, acme, django_capture_on_commit_callbacks
):
    """The subject renders but the HTML body fails on the event's data: the event is a dead
    letter naming the rule and the part, not a queued email that fails in the worker."""
    template_create(
        slug="party",
        name="Party",
        subject="Party time",
        html="<p>{% if guests|divisibleby:2 %}Even{% endif %}</p>",
        text="Party",
    )
    rule = event_rule_create(
        client=acme, event_type="party.planned", template="party", recipient_path="email"
    )
    event = {"id": "p1", "type": "party.planned", "client": "acme"}
    publish(redis, {**event, "data": {"email": "ada@example.com", "guests": "many"}})

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        consume()

    (letter,) = dead_letters(redis)
    assert f"rule {rule.pk}" in letter["reason"]
    assert "Template 'party' cannot render its html" in letter["reason"]
    assert EmailJob.objects.count() == 0
    assert HandledEvent.objects.count() == 0, "a fixed template may handle the replay"
    assert callbacks == [], "no delivery requested for the rolled-back email"
    assert pending_count(redis) == 0

    publish(redis, {**event, "data": {"email": "ada@example.com", "guests": 4}})
    consume()
    assert EmailJob.objects.get().metadata["event_id"] == "p1"


def test_consumers_that_died_with_nothing_pending_leave_the_group(redis, booking_rule, settings):
    """The claim pass removes consumers idle past the threshold with nothing pending; one with
    pending entries stays (its entries must remain claimable), and so does the live one."""
    streams.group_ensure(redis)
    # A consumer that joined, read nothing and was killed before it could leave.
    assert redis.xgroup_createconsumer(STREAM, "mailqueue", "stale")
    publish(redis, booking_event("evt-kept"))
    assert redis.xreadgroup("mailqueue", "crashed", {STREAM: ">"}, count=1)
    names = {row["name"] for row in redis.xinfo_consumers(STREAM, "mailqueue")}
    assert names == {b"stale", b"crashed"}

    consume(steps=1, name="survivor")  # the default threshold (an hour): nobody is removed
    assert {row["name"] for row in redis.xinfo_consumers(STREAM, "mailqueue")} == names

    settings.MAILQUEUE_EVENTS_STALE_CONSUMER_SECONDS = 0.05
    redis.xgroup_createconsumer(STREAM, "mailqueue", "survivor")
    time.sleep(0.1)
    EventConsumer(name="survivor").step()

    rows = {row["name"]: row["pending"] for row in redis.xinfo_consumers(STREAM, "mailqueue")}
    assert rows == {b"crashed": 1, b"survivor": 0}
    # The consumer pruning is never removed, however idle it looks.
    time.sleep(0.1)
    assert streams.consumers_prune(redis, keep="survivor", idle_seconds=0.05) == []
    assert streams.consumers_prune(redis, keep="other", idle_seconds=0.05) == ["survivor"]
