"""Runs of recurring sends: one batch per tick, missed ticks, exactly once under concurrency,
subscriber frequencies, chunked expansion that resumes after a crash."""

import threading
from datetime import UTC, datetime, time

import pytest
from django.db import connection

from mailqueue.models import Batch, CapturedMessage, EmailJob
from schedules.models import Schedule, ScheduleRun
from schedules.services import (
    schedule_create,
    schedule_run_expand,
    schedules_tick,
)
from tests.helpers import run_worker
from topics.models import Frequency

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
    implicit = Schedule.objects.get(frequency=Frequency.DAILY)
    assert (implicit.cron, implicit.timezone) == ("30 9 * * *", "Europe/Paris")
    assert implicit.next_run_at == utc(2026, 1, 7, 8, 30)


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
            raise RuntimeError("killed")
        return real(run, recipients)

    monkeypatch.setattr(services, "_emails_add", crash_on_second)
    with pytest.raises(RuntimeError):
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
