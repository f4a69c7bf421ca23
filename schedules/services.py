"""Writes of recurring sends: schedules, the runs their ticks make, and the expansion of a
run's audience into a batch of emails.

Exactly one run per tick: a run is a `ScheduleRun` row unique on (schedule, tick), inserted in
the transaction that locks its schedule row (`SELECT ... FOR UPDATE SKIP LOCKED`) and moves the
schedule's `next_run_at` on. A second scheduler skips the locked row, then finds it no longer
due; a tick processed again (a restart before `next_run_at` moved) hits the unique row. Nothing
depends on Redis, so a flushed Redis cannot make a tick run twice.

A topic's audience is expanded in chunks of `conf.chunk_size()` subscribers, by subscriber id:
each chunk's emails and the run's `last_subscriber_id` commit together, so a crash mid-run
resumes at the next chunk, never sending a subscriber twice. The scheduler's pass resumes runs
whose expansion is not done.
"""

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from mailqueue.errors import ValidationFailed
from mailqueue.models import Batch, Client, Priority
from mailqueue.services.emails import BatchRecipient, batch_content, batch_emails_add
from mailqueue.validation import address_spec, normalize_address
from schedules import conf
from schedules.cron import cron_next, cron_previous, cron_validate, timezone_validate
from schedules.models import MissedPolicy, Schedule, ScheduleRun
from templates_app.selectors import template_get_active
from templates_app.services import template_validate_sources
from topics.models import Frequency, Subscriber, SubscriberStatus, Topic

logger = logging.getLogger(__name__)

# Fields of a schedule a client sets.
SCHEDULE_FIELDS = (
    "name",
    "topic",
    "recipients",
    "template",
    "subject",
    "html",
    "text",
    "context",
    "cron",
    "timezone",
    "active",
    "priority",
    "missed",
)
# Most due schedules one pass takes on; the next pass (a second later) takes the rest.
_DUE_PER_PASS = 100


# --- Schedules ------------------------------------------------------------------------------


def _checked_recipients(recipients: Sequence[str]) -> list[str]:
    """Bare lowercased addresses, each once; ValidationFailed naming `recipients[i]`."""
    if len(recipients) > conf.recipients_max():
        raise ValidationFailed(
            f"Too many recipients: {len(recipients)} (the limit is {conf.recipients_max()}); "
            "subscribe them to a topic instead.",
            field="recipients",
        )
    checked: list[str] = []
    for index, address in enumerate(recipients):
        spec = address_spec(normalize_address(address, field=f"recipients[{index}]"))
        if spec not in checked:
            checked.append(spec)
    return checked


def schedule_validate(*, schedule: Schedule) -> None:
    """Raise ValidationFailed (or TemplateRenderError) naming the field a schedule cannot have:
    exactly one audience (a `topic` or `recipients`), content of its own or its topic's (a
    template, or a subject with html/text, never both), a valid cron and IANA time zone."""
    if schedule.topic_id and schedule.recipients:
        raise ValidationFailed(
            "Give either 'topic' (its active subscribers) or 'recipients', not both.",
            field="topic",
        )
    if not schedule.topic_id and not schedule.recipients:
        raise ValidationFailed(
            "Give either 'topic' (its active subscribers) or 'recipients'.", field="topic"
        )
    if schedule.template:
        if schedule.subject or schedule.html or schedule.text:
            raise ValidationFailed(
                "Give either 'template' or the schedule's own 'subject' with 'html' and/or "
                "'text', not both.",
                field="template",
            )
        template_get_active(slug=schedule.template, field="template")
    elif schedule.subject or schedule.html or schedule.text:
        if not schedule.subject:
            raise ValidationFailed("Give 'subject' with 'html' and/or 'text'.", field="subject")
        if not (schedule.html or schedule.text):
            raise ValidationFailed("Give 'html' and/or 'text'.", field="html")
        template_validate_sources(subject=schedule.subject, html=schedule.html, text=schedule.text)
    elif not schedule.topic_id:
        raise ValidationFailed(
            "A schedule of fixed recipients needs content: 'template', or 'subject' with "
            "'html' and/or 'text'.",
            field="template",
        )
    schedule.cron = cron_validate(schedule.cron)
    timezone_validate(schedule.timezone)


def _next_run_at(schedule: Schedule, after: datetime) -> datetime:
    return cron_next(schedule.cron, schedule.timezone, after)[0]


def _assign(schedule: Schedule, client: Client, fields: dict[str, Any]) -> None:
    """Set the given fields on a schedule; a topic is given by its slug (the client's own)."""
    for key, value in fields.items():
        if key not in SCHEDULE_FIELDS:
            continue
        if key == "topic":
            schedule.topic = _client_topic(client, value) if value else None
        elif key == "recipients":
            schedule.recipients = _checked_recipients(value or [])
        else:
            setattr(schedule, key, value)


def _client_topic(client: Client, slug: str) -> Topic:
    topic = Topic.objects.filter(client=client, slug=slug).first()
    if topic is None:
        raise ValidationFailed(f"No topic with slug '{slug}'.", field="topic")
    return topic


@transaction.atomic
def schedule_create(*, client: Client, **fields: Any) -> Schedule:
    """Create one of a client's schedules after checking it; its first run is the next tick."""
    schedule = Schedule(client=client)
    _assign(schedule, client, fields)
    schedule_validate(schedule=schedule)
    schedule.next_run_at = _next_run_at(schedule, timezone.now())
    schedule.save()
    return schedule


@transaction.atomic
def schedule_update(*, schedule: Schedule, **fields: Any) -> Schedule:
    """Change a schedule; its next run is recomputed from now (runs already made stay)."""
    # Locked, so two concurrent partial edits cannot leave a mix that was never validated.
    locked = Schedule.objects.select_for_update().get(pk=schedule.pk)
    _assign(locked, locked.client, fields)
    schedule_validate(schedule=locked)
    locked.next_run_at = _next_run_at(locked, timezone.now())
    locked.save()
    return locked


def schedule_delete(*, schedule: Schedule) -> None:
    """Delete a schedule and its runs' records; its batches and their emails stay."""
    schedule.delete()


def schedule_pause(*, schedule: Schedule) -> Schedule:
    """Stop a schedule's runs (an active schedule only; pausing a paused one changes nothing)."""
    Schedule.objects.filter(pk=schedule.pk, active=True).update(
        active=False, updated_at=timezone.now()
    )
    schedule.refresh_from_db()
    return schedule


def schedule_resume(*, schedule: Schedule) -> Schedule:
    """Start a paused schedule again from its next tick (ticks missed while paused do not run)."""
    now = timezone.now()
    Schedule.objects.filter(pk=schedule.pk, active=False).update(
        active=True, next_run_at=_next_run_at(schedule, now), updated_at=now
    )
    schedule.refresh_from_db()
    return schedule


# --- Runs -----------------------------------------------------------------------------------


def _run_content(schedule: Schedule) -> dict[str, Any]:
    """What a run of the schedule sends, fixed when it is made: the schedule's own content or
    its topic's, the topic's context under the schedule's, and its audience."""
    topic = schedule.topic
    own = schedule.template or schedule.subject
    source = schedule if own or topic is None else topic
    return {
        "template": source.template,
        "subject": source.subject,
        "html": source.html,
        "text": source.text,
        "context": {**(topic.context if topic else {}), **schedule.context},
        "topic": topic.slug if topic else "",
        "topic_id": topic.pk if topic else None,
        "frequency": schedule.frequency,
        "recipients": list(schedule.recipients),
    }


def _run_create(schedule: Schedule, tick: datetime, *, manual: bool) -> ScheduleRun | None:
    """Insert a run and its (empty) batch, or None when the tick already has its run."""
    content = _run_content(schedule)
    try:
        # A savepoint: losing the race for the unique (schedule, tick) undoes the batch too.
        with transaction.atomic():
            template = (
                template_get_active(slug=content["template"]) if content["template"] else None
            )
            batch = Batch.objects.create(
                client_id=schedule.client_id,
                template=template,
                context=content["context"],
                priority=schedule.priority,
                tags=["schedule"],
                schedule=schedule,
                run_at=tick,
            )
            run = ScheduleRun.objects.create(
                batch=batch, schedule=schedule, tick=tick, manual=manual, content=content
            )
    except IntegrityError:
        return None
    except ValidationFailed as exc:
        # The template went away since the schedule was saved: nothing can be sent for this
        # tick; the schedule moves on (and says why in the log).
        logger.warning("schedule %s: tick %s not run: %s", schedule.pk, tick, exc.message)
        return None
    if content["recipients"]:
        # A fixed list is bounded: its emails commit with the run row, in the caller's
        # transaction.
        _expand_recipients(run)
    return run


def _expand_recipients(run: ScheduleRun) -> None:
    """Add a fixed list's emails to the run's batch and mark it expanded."""
    content = run.content
    recipients = [
        BatchRecipient(to=[address], context={}, metadata={}) for address in content["recipients"]
    ]
    _emails_add(run, recipients)
    ScheduleRun.objects.filter(pk=run.pk).update(expanded_at=timezone.now())


def _emails_add(run: ScheduleRun, recipients: list[BatchRecipient]) -> int:
    """Add emails for some of the run's audience to its batch."""
    content = run.content
    return batch_emails_add(
        batch=run.batch,
        content=batch_content(
            template=content["template"],
            subject=content["subject"],
            html=content["html"],
            text=content["text"],
        ),
        recipients=recipients,
        topic=content["topic"],
    )


def schedule_run_now(*, schedule: Schedule) -> ScheduleRun:
    """Run a schedule once now, whatever its cron (also when paused); its next tick stays.

    A fixed list's emails are made at once; a topic's audience is expanded here for up to
    MAILQUEUE_SCHEDULE_EXPAND_SECONDS, the scheduler's next pass doing the rest.
    """
    with transaction.atomic():
        schedule = Schedule.objects.select_related("topic", "client").get(pk=schedule.pk)
        run = _run_create(schedule, timezone.now(), manual=True)
        if run is None:
            raise ValidationFailed(
                "The schedule's template is no longer active; change the schedule.",
                field="template",
            )
    schedule_run_expand(run_id=run.pk, deadline=time.monotonic() + conf.expand_seconds())
    run.refresh_from_db()
    run.batch.refresh_from_db()
    return run


def _due_tick(schedule: Schedule, now: datetime) -> datetime | None:
    """The tick a due schedule runs for now, or None when its missed policy skips it.

    `run_once`: the latest tick that has passed (after downtime, once for all that were
    missed). `skip`: the due tick only if it is the only one that passed and it is late by no
    more than MAILQUEUE_SCHEDULE_MISSED_GRACE.
    """
    latest = cron_previous(schedule.cron, schedule.timezone, now)
    if schedule.missed == MissedPolicy.RUN_ONCE:
        return latest
    on_time = now - latest <= timedelta(seconds=conf.missed_grace_seconds())
    return latest if latest == schedule.next_run_at and on_time else None


def _schedule_tick(schedule_id: Any, now: datetime) -> ScheduleRun | None:
    """Make a due schedule's run (if its policy wants one) and move its next run on, in one
    transaction; None when another scheduler has it or it is no longer due."""
    with transaction.atomic():
        schedule = (
            Schedule.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("topic", "client")
            .filter(pk=schedule_id, active=True, next_run_at__lte=now)
            .first()
        )
        if schedule is None:
            return None
        tick = _due_tick(schedule, now)
        run = _run_create(schedule, tick, manual=False) if tick is not None else None
        Schedule.objects.filter(pk=schedule.pk).update(next_run_at=_next_run_at(schedule, now))
    return run


def _audience(run: ScheduleRun, after_id: int, limit: int) -> list[dict[str, Any]]:
    """The next subscribers of a topic run's audience after a subscriber id, by id: the active
    subscribers with the run's frequency (none: those who did not choose one)."""
    return list(
        Subscriber.objects.filter(
            topic_id=run.content["topic_id"],
            status=SubscriberStatus.ACTIVE,
            frequency=run.content["frequency"],
            pk__gt=after_id,
        )
        .order_by("pk")
        .values("pk", "email", "context")[:limit]
    )


def schedule_run_expand(*, run_id: Any, deadline: float | None = None) -> bool:
    """Expand a topic run's audience into its batch, one chunk per transaction, until done or
    past `deadline` (a monotonic time; None: until done). True when the run is expanded (or
    another process holds it)."""
    size = conf.chunk_size()
    while True:
        with transaction.atomic():
            run = (
                ScheduleRun.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("batch", "batch__client")
                .filter(pk=run_id, expanded_at=None)
                .first()
            )
            if run is None:
                return True
            subscribers = _audience(run, run.last_subscriber_id, size)
            if subscribers:
                _emails_add(
                    run,
                    [
                        BatchRecipient(to=[row["email"]], context=row["context"], metadata={})
                        for row in subscribers
                    ],
                )
            changes: dict[str, Any] = {}
            if subscribers:
                changes["last_subscriber_id"] = subscribers[-1]["pk"]
            if len(subscribers) < size:
                changes["expanded_at"] = timezone.now()
            ScheduleRun.objects.filter(pk=run.pk).update(**changes)
        if "expanded_at" in changes:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def schedule_runs_resume(*, deadline: float | None = None) -> None:
    """Go on expanding the runs whose expansion is not done (oldest first), until `deadline`."""
    pending = ScheduleRun.objects.filter(expanded_at=None).order_by("created_at")
    for run_id in pending.values_list("pk", flat=True)[:_DUE_PER_PASS]:
        if not schedule_run_expand(run_id=run_id, deadline=deadline):
            return


def schedules_tick(*, now: datetime | None = None) -> list[ScheduleRun]:
    """The scheduler's pass: make the runs of every active schedule due by `now` (one run per
    tick, see the module's docstring), then expand runs for up to
    MAILQUEUE_SCHEDULE_EXPAND_SECONDS. Returns the runs made."""
    now = now or timezone.now()
    frequency_schedules_sync(now=now)
    due = (
        Schedule.objects.filter(active=True, next_run_at__lte=now)
        .order_by("next_run_at")
        .values_list("pk", flat=True)[:_DUE_PER_PASS]
    )
    runs = [run for pk in list(due) if (run := _schedule_tick(pk, now)) is not None]
    schedule_runs_resume(deadline=time.monotonic() + conf.expand_seconds())
    return runs


# --- Subscriber frequencies -----------------------------------------------------------------


def frequency_cron(*, frequency: str, send_time: Any) -> str:
    """The cron expression of a frequency at a topic's send time: hourly at minute 0, daily at
    the send time, weekly on Mondays, monthly on the 1st."""
    minute, hour = send_time.minute, send_time.hour
    return {
        Frequency.HOURLY: "0 * * * *",
        Frequency.DAILY: f"{minute} {hour} * * *",
        Frequency.WEEKLY: f"{minute} {hour} * * 1",
        Frequency.MONTHLY: f"{minute} {hour} 1 * *",
    }[frequency]


# Each (topic, frequency) that has active subscribers, found by skipping through the partial
# index `subscriber_frequency_active` (one probe per pair, not a scan of the subscribers).
_FREQUENCY_PAIRS_SQL = """
WITH RECURSIVE pairs AS (
    (SELECT topic_id, frequency FROM topic_subscribers
     WHERE status = %(active)s AND frequency <> ''
     ORDER BY topic_id, frequency LIMIT 1)
    UNION ALL
    SELECT following.topic_id, following.frequency FROM pairs, LATERAL (
        SELECT s.topic_id, s.frequency FROM topic_subscribers AS s
        WHERE s.status = %(active)s AND s.frequency <> ''
          AND (s.topic_id, s.frequency) > (pairs.topic_id, pairs.frequency)
        ORDER BY s.topic_id, s.frequency LIMIT 1
    ) AS following
)
SELECT topic_id, frequency FROM pairs
"""


def _frequency_pairs() -> set[tuple[int, str]]:
    if connection.vendor != "postgresql":
        rows = (
            Subscriber.objects.filter(status=SubscriberStatus.ACTIVE)
            .exclude(frequency="")
            .values_list("topic_id", "frequency")
            .distinct()
        )
        return set(rows)
    with connection.cursor() as cursor:
        cursor.execute(_FREQUENCY_PAIRS_SQL, {"active": SubscriberStatus.ACTIVE})
        return set(cursor.fetchall())


def frequency_schedules_sync(*, now: datetime) -> None:
    """Keep one implicit schedule per topic and frequency its active subscribers chose: made
    when the first such subscriber appears (a tick that passed less than
    MAILQUEUE_SCHEDULE_MISSED_GRACE ago still runs), in step with the topic's send time and
    time zone, paused while nobody has that frequency."""
    pairs = _frequency_pairs()
    grace_ago = now - timedelta(seconds=conf.missed_grace_seconds())
    implicit = Schedule.objects.exclude(frequency="").select_related("topic")
    seen: set[tuple[int, str]] = set()
    for schedule in implicit:
        key = (schedule.topic_id, schedule.frequency)
        seen.add(key)
        wanted = key in pairs
        cron = frequency_cron(frequency=schedule.frequency, send_time=schedule.topic.send_time)
        if (schedule.cron, schedule.timezone) == (cron, schedule.topic.timezone):
            if schedule.active == wanted:
                continue
            if not wanted:
                Schedule.objects.filter(pk=schedule.pk).update(active=False, updated_at=now)
                continue
        schedule.cron, schedule.timezone = cron, schedule.topic.timezone
        Schedule.objects.filter(pk=schedule.pk).update(
            cron=cron,
            timezone=schedule.timezone,
            active=wanted,
            next_run_at=_next_run_at(schedule, grace_ago),
            updated_at=now,
        )
    missing = pairs - seen
    if not missing:
        return
    topics = Topic.objects.in_bulk({topic_id for topic_id, _ in missing})
    for topic_id, frequency in sorted(missing):
        topic = topics[topic_id]
        schedule = Schedule(
            client_id=topic.client_id,
            topic=topic,
            frequency=frequency,
            name=f"{topic.slug} {frequency}",
            cron=frequency_cron(frequency=frequency, send_time=topic.send_time),
            timezone=topic.timezone,
            priority=Priority.LOW,
        )
        schedule.next_run_at = _next_run_at(schedule, grace_ago)
        try:
            # A savepoint: a second scheduler making the same schedule meanwhile wins.
            with transaction.atomic():
                schedule.save()
        except IntegrityError:
            continue
