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
from django.db.models import F, Value
from django.utils import timezone

from mailqueue.errors import ValidationFailed
from mailqueue.models import Batch, Client, Priority
from mailqueue.services.emails import BatchContent, BatchRecipient, batch_emails_add
from mailqueue.validation import address_spec, normalize_address
from schedules import conf
from schedules.cron import cron_next, cron_previous, cron_validate, timezone_validate
from schedules.models import FREQUENCY_SCHEDULE, MissedPolicy, Schedule, ScheduleRun
from templates_app.models import EmailTemplate, EmailTemplateVersion
from templates_app.selectors import template_get_active
from templates_app.services import template_current_version, template_validate_sources
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
    if not isinstance(recipients, list | tuple):
        raise ValidationFailed("Give a list of email addresses.", field="recipients")
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
    if not isinstance(schedule.context, dict):
        raise ValidationFailed("Give a JSON object.", field="context")
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


def schedule_build(*, client: Client, schedule: Schedule | None = None, **fields: Any) -> Schedule:
    """A schedule of the client's (a new one, or `schedule`) with the fields set and checked
    as the API checks them, not saved: a topic is given by its slug (the client's own), the
    recipients are normalized. ValidationFailed naming the field otherwise."""
    schedule = schedule if schedule is not None else Schedule(client=client)
    _assign(schedule, client, fields)
    schedule_validate(schedule=schedule)
    return schedule


@transaction.atomic
def schedule_create(*, client: Client, **fields: Any) -> Schedule:
    """Create one of a client's schedules after checking it; its first run is the next tick."""
    schedule = schedule_build(client=client, **fields)
    schedule.next_run_at = _next_run_at(schedule, timezone.now())
    schedule.save()
    return schedule


@transaction.atomic
def schedule_update(*, schedule: Schedule, **fields: Any) -> Schedule:
    """Change a schedule; its next run is recomputed from now (runs already made stay)."""
    # Locked, so two concurrent partial edits cannot leave a mix that was never validated.
    locked = Schedule.objects.select_for_update().get(pk=schedule.pk)
    schedule_build(client=locked.client, schedule=locked, **fields)
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


def _run_content(schedule: Schedule, frequencies: list[str]) -> dict[str, Any]:
    """What a run of the schedule sends, fixed when it is made: the schedule's own content or
    its topic's, the topic's context under the schedule's, and its audience (a fixed list, or
    the topic's subscribers whose frequency is one of `frequencies`, "" being no frequency)."""
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
        "frequencies": frequencies,
        "recipients": list(schedule.recipients),
    }


def _due_frequencies(topic: Topic, tick: datetime) -> list[str]:
    """The subscriber frequencies due at a tick of a topic's frequency schedule: those whose
    own cron (at the topic's send time and zone) has this tick."""
    return [
        frequency
        for frequency in Frequency.values
        if cron_previous(
            frequency_cron(frequency=frequency, send_time=topic.send_time), topic.timezone, tick
        )
        == tick
    ]


def _run_create(schedule: Schedule, tick: datetime, *, manual: bool) -> ScheduleRun | None:
    """Insert a run and its (empty) batch, or None when the tick already has its run (or, for
    a topic's frequency schedule, no subscriber is due at it)."""
    frequencies = [""]
    if schedule.frequency:
        frequencies = _due_frequencies(schedule.topic, tick)
        due = Subscriber.objects.filter(
            topic_id=schedule.topic_id, status=SubscriberStatus.ACTIVE, frequency__in=frequencies
        )
        if not frequencies or not due.exists():
            return None
    content = _run_content(schedule, frequencies)
    try:
        # A savepoint: losing the race for the unique (schedule, tick) undoes the batch too.
        with transaction.atomic():
            template = (
                template_get_active(slug=content["template"]) if content["template"] else None
            )
            if template is not None:
                # Every chunk sends this version, whatever happens to the template meanwhile.
                version = template_current_version(template=template)
                content["template_id"] = template.pk
                content["template_version_id"] = version.pk if version else None
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


def _run_batch_content(run: ScheduleRun) -> BatchContent:
    """The content the run was made with: its template and version loaded by id (an edit or a
    deactivation since then changes nothing), or its inline content."""
    content = run.content
    # Runs made before the ids were stored: the batch's template, at its current version.
    template_id = content.get("template_id", run.batch.template_id)
    if template_id is None:
        return BatchContent(subject=content["subject"], html=content["html"], text=content["text"])
    template = EmailTemplate.objects.get(pk=template_id)
    version_id = content.get("template_version_id")
    version = (
        EmailTemplateVersion.objects.get(pk=version_id)
        if version_id
        else template_current_version(template=template)
    )
    if version is not None:
        # The required variables are checked against the version sent, not a later edit's.
        template.variables = version.variables
    return BatchContent(template=template, version=version)


def _emails_add(run: ScheduleRun, recipients: list[BatchRecipient]) -> int:
    """Add emails for some of the run's audience to its batch."""
    return batch_emails_add(
        batch=run.batch,
        content=_run_batch_content(run),
        recipients=recipients,
        topic=run.content["topic"],
    )


def schedule_run_now(*, schedule: Schedule) -> ScheduleRun:
    """Run a schedule once now, whatever its cron (also when paused); its next tick stays.

    A fixed list's emails are made at once; a topic's first chunk of subscribers is expanded
    here, the scheduler's next pass doing the rest (the request does not wait for a large
    audience).
    """
    with transaction.atomic():
        schedule = Schedule.objects.select_related("topic", "client").get(pk=schedule.pk)
        if schedule.frequency:
            raise ValidationFailed(
                "A topic's frequency schedule runs at its subscribers' ticks only.",
                field="frequency",
            )
        run = _run_create(schedule, timezone.now(), manual=True)
        if run is None:
            raise ValidationFailed(
                "The schedule's template is no longer active; change the schedule.",
                field="template",
            )
    schedule_run_expand(run_id=run.pk, chunks=1)
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
    subscribers whose frequency is one of the run's ("": those who did not choose one)."""
    content = run.content
    # Runs made while each frequency had its own schedule name one frequency.
    frequencies = content.get("frequencies", [content.get("frequency", "")])
    # One range scan of the topic's (status, frequency, id) index per frequency, each bounded
    # by the limit, merged: never a sort of the whole audience.
    scans = [
        Subscriber.objects.filter(
            topic_id=content["topic_id"],
            status=SubscriberStatus.ACTIVE,
            frequency=frequency,
            pk__gt=after_id,
        )
        .order_by("pk")
        .values("pk", "email", "context")[:limit]
        for frequency in frequencies
    ]
    if len(scans) == 1:
        return list(scans[0])
    return list(scans[0].union(*scans[1:], all=True).order_by("pk")[:limit])


def schedule_run_expand(
    *, run_id: Any, deadline: float | None = None, chunks: int | None = None
) -> bool:
    """Expand a topic run's audience into its batch, one chunk per transaction, until done,
    past `deadline` (a monotonic time) or after `chunks` chunks (None: no such limit). True
    when the run is expanded (or another process holds it)."""
    size = conf.chunk_size()
    done_chunks = 0
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
        done_chunks += 1
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if chunks is not None and done_chunks >= chunks:
            return False


def schedule_runs_resume(
    *, deadline: float | None = None, run_ids: Sequence[Any] | None = None
) -> None:
    """Go on expanding the runs whose expansion is not done (oldest first; or those of
    `run_ids`), until `deadline`. A run that fails is logged and left for a later pass: it
    never holds up the runs after it."""
    if run_ids is None:
        pending = ScheduleRun.objects.filter(expanded_at=None).order_by("created_at")
        run_ids = list(pending.values_list("pk", flat=True)[:_DUE_PER_PASS])
    for run_id in run_ids:
        try:
            if not schedule_run_expand(run_id=run_id, deadline=deadline):
                return
        except Exception:
            # Not the message: it may name a subscriber. The traceback says where it failed.
            logger.exception("schedule run %s: expansion failed; retried next pass", run_id)


def _due_and_pending(now: datetime) -> tuple[list[Any], list[Any]]:
    """The schedules due by `now` (earliest first) and the runs not yet expanded (oldest
    first), in one query: two bounded scans of partial indexes, so an idle pass costs one
    round trip."""
    due = (
        Schedule.objects.filter(active=True, next_run_at__lte=now)
        .annotate(kind=Value("schedule"), at=F("next_run_at"))
        .order_by("next_run_at")
        .values_list("pk", "kind", "at")[:_DUE_PER_PASS]
    )
    pending = (
        ScheduleRun.objects.filter(expanded_at=None)
        .annotate(kind=Value("run"), at=F("created_at"))
        .order_by("created_at")
        .values_list("pk", "kind", "at")[:_DUE_PER_PASS]
    )
    rows = sorted(due.union(pending, all=True), key=lambda row: row[2])
    return (
        [pk for pk, kind, _ in rows if kind == "schedule"],
        [pk for pk, kind, _ in rows if kind == "run"],
    )


# Seconds between two syncs of the frequency schedules in one process (each pass would be a
# recursive query and every implicit schedule loaded twice a second). Less than
# MAILQUEUE_SCHEDULE_MISSED_GRACE, so a schedule made late still runs the tick it missed.
FREQUENCY_SYNC_INTERVAL_SECONDS = 30.0
# When this process last synced them (a monotonic time; None: not yet).
_frequency_synced_at: float | None = None


def _frequency_schedules_sync_throttled(now: datetime) -> None:
    """Sync the frequency schedules if this process has not for a while; a failure is logged
    and does not stop the pass."""
    global _frequency_synced_at
    clock = time.monotonic()
    if (
        _frequency_synced_at is not None
        and clock - _frequency_synced_at < FREQUENCY_SYNC_INTERVAL_SECONDS
    ):
        return
    _frequency_synced_at = clock
    try:
        frequency_schedules_sync(now=now)
    except Exception:
        logger.exception("frequency schedules: sync failed; retried in a while")


def schedules_tick(*, now: datetime | None = None) -> list[ScheduleRun]:
    """The scheduler's pass: make the runs of every active schedule due by `now` (one run per
    tick, see the module's docstring), then expand runs for up to
    MAILQUEUE_SCHEDULE_EXPAND_SECONDS. Returns the runs made. A schedule or run that fails
    is logged and skipped; the others go on."""
    now = now or timezone.now()
    _frequency_schedules_sync_throttled(now)
    due, pending = _due_and_pending(now)
    runs = []
    for pk in due:
        try:
            run = _schedule_tick(pk, now)
        except Exception:
            logger.exception("schedule %s: tick failed; retried next pass", pk)
            continue
        if run is not None:
            runs.append(run)
    deadline = time.monotonic() + conf.expand_seconds()
    # Runs just made are expanded too: look the pending runs up again.
    schedule_runs_resume(deadline=deadline, run_ids=None if runs else pending)
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


def frequency_schedule_cron(*, send_time: Any) -> str:
    """The cron of a topic's frequency schedule: every tick of every frequency (each hour at
    minute 0, and at the send time's minute), so the subscribers due at one tick make one run."""
    minute = send_time.minute
    return "0 * * * *" if minute == 0 else f"0,{minute} * * * *"


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


def _frequency_topics() -> set[int]:
    """The topics with at least one active subscriber who chose a frequency."""
    if connection.vendor != "postgresql":
        rows = (
            Subscriber.objects.filter(status=SubscriberStatus.ACTIVE)
            .exclude(frequency="")
            .values_list("topic_id", flat=True)
            .distinct()
        )
        return set(rows)
    with connection.cursor() as cursor:
        cursor.execute(_FREQUENCY_PAIRS_SQL, {"active": SubscriberStatus.ACTIVE})
        return {topic_id for topic_id, _ in cursor.fetchall()}


def frequency_schedules_sync(*, now: datetime) -> None:
    """Keep one implicit schedule per topic whose active subscribers chose a frequency: made
    when the first such subscriber appears (a tick that passed less than
    MAILQUEUE_SCHEDULE_MISSED_GRACE ago still runs), in step with the topic's send time and
    time zone, paused while nobody has a frequency. Schedules of the earlier layout (one per
    topic and frequency) are paused for good."""
    topics = _frequency_topics()
    grace_ago = now - timedelta(seconds=conf.missed_grace_seconds())
    implicit = Schedule.objects.exclude(frequency="").select_related("topic")
    seen: set[int] = set()
    for schedule in implicit:
        current = schedule.frequency == FREQUENCY_SCHEDULE
        if current:
            seen.add(schedule.topic_id)
        wanted = current and schedule.topic_id in topics
        cron = frequency_schedule_cron(send_time=schedule.topic.send_time)
        if not current or (schedule.cron, schedule.timezone) == (cron, schedule.topic.timezone):
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
    missing = topics - seen
    if not missing:
        return
    for topic in Topic.objects.filter(pk__in=missing).order_by("pk"):
        schedule = Schedule(
            client_id=topic.client_id,
            topic=topic,
            frequency=FREQUENCY_SCHEDULE,
            name=f"{topic.slug} subscriber frequencies",
            cron=frequency_schedule_cron(send_time=topic.send_time),
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
