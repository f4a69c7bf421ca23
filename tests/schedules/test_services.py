"""Runs of recurring sends: one batch per tick, missed ticks, exactly once under concurrency,
subscriber frequencies, chunked expansion that resumes after a crash."""

import threading
from datetime import UTC, datetime, time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from mailqueue.models import Batch, CapturedMessage, EmailJob
from schedules.models import FREQUENCY_SCHEDULE, Schedule, ScheduleRun
from schedules.services import (
    schedule_create,
    schedule_run_expand,
    schedules_tick,
)
from templates_app.models import EmailTemplate
from templates_app.services import template_current_version, template_update
from tests.helpers import run_worker
from topics.models import Frequency
from topics.services import topic_create

pytestmark = pytest.mark.django_db


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _due(schedule: Schedule, at: datetime) -> Schedule:
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=at)
    schedule.refresh_from_db()
    return schedule


def test_a_run_sends_the_topic_to_its_active_subscribers_with_their_context(
    news, add_subscribers, settings, django_capture_on_commit_callbacks
):
    """One batch; each email renders topic < schedule < subscriber context and carries the
    topic (so its one-click unsubscribe); unsubscribed and frequency subscribers are left out."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_PUBLIC_URL = "https://mail.acme.test"
    add_subscribers(news, 2, context={"city": "London"})
    add_subscribers(news, 1, start=2, status="unsubscribed")
    add_subscribers(news, 1, start=3, frequency=Frequency.DAILY)
    schedule = schedule_create(
        client=news.client, topic="news", cron="0 9 * * *", context={"name": "Ada"}
    )
    _due(schedule, utc(2026, 1, 5, 9))

    with django_capture_on_commit_callbacks(execute=True):
        runs = schedules_tick(now=utc(2026, 1, 5, 9, 0, 1))
    with django_capture_on_commit_callbacks(execute=True):
        run_worker()

    # The @daily subscriber's own run (its topic's 09:00) is another batch.
    [run] = [made for made in runs if made.schedule_id == schedule.pk]
    batch = Batch.objects.get(pk=run.pk)
    assert (batch.schedule_id, batch.run_at, batch.count) == (schedule.pk, utc(2026, 1, 5, 9), 2)
    emails = EmailJob.objects.filter(batch=batch)
    assert sorted(emails.values_list("recipient", flat=True)) == [
        "user0@example.com",
        "user1@example.com",
    ]
    assert {(e.topic, e.transactional, e.status) for e in emails} == {("news", False, "sent")}
    captured = CapturedMessage.objects.get(to=["user0@example.com"])
    assert captured.subject == "News for Ada"
    assert "Hello Ada from London" in captured.mime
    assert "List-Unsubscribe-Post" in captured.mime
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 6, 9)


def test_a_fixed_list_with_a_template_gets_one_batch(acme, welcome_template):
    schedule = schedule_create(
        client=acme,
        recipients=["a@example.com", "B@example.com"],
        template="welcome",
        context={"name": "team"},
        cron="@daily",
    )
    _due(schedule, utc(2026, 1, 5))
    [run] = schedules_tick(now=utc(2026, 1, 5, 0, 0, 1))
    emails = EmailJob.objects.filter(batch_id=run.pk)
    assert sorted(e.recipient for e in emails) == ["a@example.com", "b@example.com"]
    assert {e.subject for e in emails} == {"Welcome, team!"}
    assert {e.priority for e in emails} == {"low"}


@pytest.mark.parametrize(("missed", "runs", "next_run"), [("run_once", 1, 14), ("skip", 0, 14)])
def test_missed_ticks_after_downtime(news, add_subscribers, missed, runs, next_run):
    """Down from 09:00 to 13:30 across five hourly ticks: run_once runs the 13:00 tick once,
    skip runs none; either way the next run is 14:00."""
    add_subscribers(news, 1)
    schedule = schedule_create(client=news.client, topic="news", cron="@hourly", missed=missed)
    _due(schedule, utc(2026, 1, 5, 9))

    made = schedules_tick(now=utc(2026, 1, 5, 13, 30))

    assert len(made) == runs
    assert [r.tick for r in ScheduleRun.objects.all()] == ([utc(2026, 1, 5, 13)] if runs else [])
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 5, next_run)


def test_skip_still_runs_a_tick_it_is_on_time_for(news, add_subscribers):
    add_subscribers(news, 1)
    schedule = schedule_create(client=news.client, topic="news", cron="@hourly", missed="skip")
    _due(schedule, utc(2026, 1, 5, 9))
    assert len(schedules_tick(now=utc(2026, 1, 5, 9, 0, 2))) == 1


def test_a_tick_processed_again_after_a_restart_runs_once(news, add_subscribers):
    """The scheduler died after the run but before next_run_at moved (simulated by moving it
    back): the same tick makes no second run."""
    add_subscribers(news, 3)
    schedule = schedule_create(client=news.client, topic="news", cron="@hourly")
    _due(schedule, utc(2026, 1, 5, 9))
    assert len(schedules_tick(now=utc(2026, 1, 5, 9, 0, 1))) == 1
    _due(schedule, utc(2026, 1, 5, 9))
    assert schedules_tick(now=utc(2026, 1, 5, 9, 0, 30)) == []
    assert ScheduleRun.objects.count() == 1
    assert EmailJob.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ticks_make_one_run(issued_key, add_subscribers):
    """Two threads (two database connections) tick the same due schedule at once."""
    from topics.services import topic_create

    topic = topic_create(
        client=issued_key.api_key.client, slug="t", name="T", subject="s", text="hi"
    )
    add_subscribers(topic, 20)
    schedule = schedule_create(client=topic.client, topic="t", cron="@hourly")
    _due(schedule, utc(2026, 1, 5, 9))
    barrier = threading.Barrier(2)
    errors = []

    def tick() -> None:
        try:
            barrier.wait()
            schedules_tick(now=utc(2026, 1, 5, 9, 0, 1))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert ScheduleRun.objects.count() == 1
    assert EmailJob.objects.count() == 20


def test_daily_subscribers_get_one_run_at_the_topics_send_time(news, add_subscribers):
    """Only the @daily subscribers, at 09:30 Europe/Paris; weekly and no-frequency ones not."""
    news.send_time, news.timezone = time(9, 30), "Europe/Paris"
    news.save()
    add_subscribers(news, 2, frequency=Frequency.DAILY)
    add_subscribers(news, 1, start=2, frequency=Frequency.WEEKLY)
    add_subscribers(news, 1, start=3)

    assert schedules_tick(now=utc(2026, 1, 6, 7)) == []  # Tuesday 08:00 Paris: not yet
    [run] = schedules_tick(now=utc(2026, 1, 6, 8, 30, 5))
    assert schedules_tick(now=utc(2026, 1, 6, 8, 31)) == []

    assert run.tick == utc(2026, 1, 6, 8, 30)
    assert sorted(EmailJob.objects.filter(batch_id=run.pk).values_list("recipient", flat=True)) == [
        "user0@example.com",
        "user1@example.com",
    ]
    # One implicit schedule for the topic: hourly ticks at minute 0, and the send time's minute.
    implicit = Schedule.objects.get(frequency=FREQUENCY_SCHEDULE)
    assert (implicit.cron, implicit.timezone) == ("0,30 * * * *", "Europe/Paris")
    assert implicit.next_run_at == utc(2026, 1, 6, 9)


class Killed(BaseException):
    """The process dying mid-chunk (not an error a pass logs and goes on from)."""


def test_chunked_expansion_resumes_after_an_interrupted_chunk(
    news, add_subscribers, settings, monkeypatch
):
    """2,500 subscribers by 1,000: a crash in the second chunk rolls that chunk back; the next
    pass resumes from the stored subscriber id: 2,500 emails, none twice."""
    settings.MAILQUEUE_SCHEDULE_CHUNK_SIZE = 1000
    add_subscribers(news, 2500)
    schedule = schedule_create(client=news.client, topic="news", cron="@hourly")
    _due(schedule, utc(2026, 1, 5, 9))

    from schedules import services

    real = services._emails_add
    calls = []

    def crash_on_second(run, recipients):
        calls.append(len(recipients))
        if len(calls) == 2:
            raise Killed
        return real(run, recipients)

    monkeypatch.setattr(services, "_emails_add", crash_on_second)
    with pytest.raises(Killed):
        schedules_tick(now=utc(2026, 1, 5, 9, 0, 1))
    run = ScheduleRun.objects.get()
    assert EmailJob.objects.count() == 1000
    assert run.expanded_at is None
    first_chunk_last = run.last_subscriber_id

    monkeypatch.setattr(services, "_emails_add", real)
    assert schedule_run_expand(run_id=run.pk) is True

    run.refresh_from_db()
    assert run.expanded_at is not None and run.last_subscriber_id > first_chunk_last
    assert EmailJob.objects.count() == 2500
    assert EmailJob.objects.values("recipient").distinct().count() == 2500
    assert Batch.objects.get(pk=run.pk).count == 2500
    assert calls == [1000, 1000]


# --- A run's content is fixed when it is made -------------------------------------------------


def _welcome_run(news, add_subscribers, settings, count: int = 5) -> ScheduleRun:
    """A run of `news` with the `welcome` template, of which one chunk of 2 is expanded."""
    settings.MAILQUEUE_SCHEDULE_CHUNK_SIZE = 2
    settings.MAILQUEUE_SCHEDULE_EXPAND_SECONDS = 0
    add_subscribers(news, count)
    schedule = schedule_create(
        client=news.client,
        topic="news",
        template="welcome",
        context={"name": "team"},
        cron="@hourly",
    )
    _due(schedule, utc(2026, 1, 5, 9))
    [run] = schedules_tick(now=utc(2026, 1, 5, 9, 0, 1))
    assert EmailJob.objects.filter(batch_id=run.pk).count() == 2
    return run


def test_a_template_edited_during_a_run_does_not_change_the_run(
    news, add_subscribers, settings, welcome_template
):
    """The template gets a new subject and a new required variable between two chunks: every
    email of the run still sends the version the run was made with."""
    run = _welcome_run(news, add_subscribers, settings)
    first_version = template_current_version(template=welcome_template)
    template_update(
        template=welcome_template, subject="Changed {{ other }}", variables=["name", "other"]
    )

    assert schedule_run_expand(run_id=run.pk) is True

    emails = EmailJob.objects.filter(batch_id=run.pk)
    assert emails.count() == 5
    assert {(e.template_version_id, e.subject) for e in emails} == {
        (first_version.pk, "Welcome, team!")
    }


def test_a_template_deactivated_during_a_run_neither_stops_it_nor_blocks_other_runs(
    news, add_subscribers, settings, welcome_template
):
    run = _welcome_run(news, add_subscribers, settings)
    EmailTemplate.objects.filter(pk=welcome_template.pk).update(is_active=False)
    digest = topic_create(client=news.client, slug="digest", name="D", subject="D", text="d")
    add_subscribers(digest, 1, start=100)
    other = schedule_create(client=news.client, topic="digest", cron="@hourly")
    _due(other, utc(2026, 1, 5, 10))
    settings.MAILQUEUE_SCHEDULE_EXPAND_SECONDS = 10

    # The welcome schedule's own 10:00 tick makes no run (its template is inactive).
    [other_run] = schedules_tick(now=utc(2026, 1, 5, 10, 0, 1))

    run.refresh_from_db()
    assert run.expanded_at is not None
    assert Batch.objects.get(pk=run.pk).count == 5
    assert {e.subject for e in EmailJob.objects.filter(batch_id=run.pk)} == {"Welcome, team!"}
    assert other_run.schedule_id == other.pk
    assert list(
        EmailJob.objects.filter(batch_id=other_run.pk).values_list("recipient", flat=True)
    ) == ["user100@example.com"]


def test_a_run_that_fails_is_logged_and_the_next_runs_go_on(
    news, add_subscribers, monkeypatch, caplog
):
    """A bug in one run's expansion (here, any error on the `news` topic) is logged without
    the subscribers' addresses; the other topic's run is expanded in the same pass."""
    from schedules import services

    add_subscribers(news, 2)
    digest = topic_create(client=news.client, slug="digest", name="D", subject="D", text="d")
    add_subscribers(digest, 1, start=100)
    first = schedule_create(client=news.client, topic="news", cron="@hourly")
    second = schedule_create(client=news.client, topic="digest", cron="@hourly")
    _due(first, utc(2026, 1, 5, 9))
    _due(second, utc(2026, 1, 5, 9))
    real = services._audience

    def broken_for_news(run, after_id, limit):
        if run.content["topic"] == "news":
            raise RuntimeError("bug")
        return real(run, after_id, limit)

    monkeypatch.setattr(services, "_audience", broken_for_news)
    with caplog.at_level("ERROR", logger="schedules.services"):
        runs = schedules_tick(now=utc(2026, 1, 5, 9, 0, 1))

    assert len(runs) == 2
    by_topic = {run.content["topic"]: ScheduleRun.objects.get(pk=run.pk) for run in runs}
    assert by_topic["news"].expanded_at is None
    assert by_topic["digest"].expanded_at is not None
    assert EmailJob.objects.filter(batch_id=by_topic["digest"].pk).count() == 1
    assert "expansion failed" in caplog.text and "@example.com" not in caplog.text


def test_a_schedule_whose_tick_fails_does_not_stop_the_others(news, add_subscribers, monkeypatch):
    from schedules import services

    add_subscribers(news, 1)
    broken = schedule_create(client=news.client, topic="news", cron="@hourly")
    fine = schedule_create(client=news.client, topic="news", cron="30 * * * *")
    _due(broken, utc(2026, 1, 5, 9))
    _due(fine, utc(2026, 1, 5, 9, 30))
    real = services._run_create

    def broken_tick(schedule, tick, *, manual):
        if schedule.pk == broken.pk:
            raise RuntimeError("bug")
        return real(schedule, tick, manual=manual)

    monkeypatch.setattr(services, "_run_create", broken_tick)
    [run] = schedules_tick(now=utc(2026, 1, 5, 9, 30, 1))

    assert run.schedule_id == fine.pk
    broken.refresh_from_db()
    assert broken.next_run_at == utc(2026, 1, 5, 9)  # rolled back: tried again next pass


# --- Subscriber frequencies: one run per tick ---------------------------------------------------


def _frequency_subscribers(news, add_subscribers) -> None:
    """user0 hourly, user1 daily, user2 weekly, user3 monthly, user4 without a frequency."""
    for index, frequency in enumerate(Frequency.values):
        add_subscribers(news, 1, start=index, frequency=frequency)
    add_subscribers(news, 1, start=4)


def _recipients(run: ScheduleRun) -> list[str]:
    return sorted(EmailJob.objects.filter(batch_id=run.pk).values_list("recipient", flat=True))


def test_every_frequency_due_at_one_tick_makes_one_run(news, add_subscribers):
    """Monday 1 June 2026 at 09:00 (the topic's send time): hourly, daily, weekly and monthly
    subscribers are all due, in one batch; at 10:00 only the hourly one is."""
    _frequency_subscribers(news, add_subscribers)

    [run] = schedules_tick(now=utc(2026, 6, 1, 9, 0, 1))
    assert run.tick == utc(2026, 6, 1, 9)
    assert _recipients(run) == [f"user{index}@example.com" for index in range(4)]
    assert Batch.objects.get(pk=run.pk).count == 4

    [later] = schedules_tick(now=utc(2026, 6, 1, 10, 0, 1))
    assert _recipients(later) == ["user0@example.com"]
    assert Schedule.objects.exclude(frequency="").count() == 1


def test_a_tick_runs_once_for_all_frequencies_even_when_processed_again(news, add_subscribers):
    _frequency_subscribers(news, add_subscribers)
    assert len(schedules_tick(now=utc(2026, 6, 1, 9, 0, 1))) == 1
    Schedule.objects.exclude(frequency="").update(next_run_at=utc(2026, 6, 1, 9))
    assert schedules_tick(now=utc(2026, 6, 1, 9, 0, 20)) == []
    assert EmailJob.objects.count() == 4


def test_schedules_of_the_old_layout_are_paused(news, add_subscribers):
    """A schedule per (topic, frequency) from before would run its subscribers a second time."""
    add_subscribers(news, 1, frequency=Frequency.DAILY)
    old = Schedule.objects.create(
        client=news.client,
        topic=news,
        frequency=Frequency.DAILY,
        cron="0 9 * * *",
        next_run_at=utc(2026, 6, 1, 9),
    )
    [run] = schedules_tick(now=utc(2026, 6, 1, 9, 0, 1))
    old.refresh_from_db()
    assert old.active is False and run.schedule.frequency == FREQUENCY_SCHEDULE
    assert EmailJob.objects.count() == 1


# --- The scheduler's pass stays cheap -------------------------------------------------------


def test_frequency_schedules_are_synced_at_most_every_interval(news, add_subscribers, monkeypatch):
    from schedules import services

    monkeypatch.setattr(services, "FREQUENCY_SYNC_INTERVAL_SECONDS", 30.0)
    schedules_tick(now=utc(2026, 6, 1, 8))
    add_subscribers(news, 1, frequency=Frequency.DAILY)

    schedules_tick(now=utc(2026, 6, 1, 8, 0, 1))
    assert not Schedule.objects.exclude(frequency="").exists()

    monkeypatch.setattr(services, "_frequency_synced_at", services._frequency_synced_at - 30)
    schedules_tick(now=utc(2026, 6, 1, 8, 0, 2))
    assert Schedule.objects.filter(frequency=FREQUENCY_SCHEDULE, active=True).count() == 1


def test_a_pass_with_nothing_due_is_one_query(news, add_subscribers, monkeypatch):
    from schedules import services

    add_subscribers(news, 1, frequency=Frequency.DAILY)
    schedule_create(client=news.client, topic="news", cron="@daily")
    schedules_tick(now=utc(2026, 6, 1, 9, 30))
    monkeypatch.setattr(services, "FREQUENCY_SYNC_INTERVAL_SECONDS", 30.0)

    with CaptureQueriesContext(connection) as queries:
        assert schedules_tick(now=utc(2026, 6, 1, 9, 40)) == []
    assert len(queries) == 1, [query["sql"] for query in queries]
