"""Recurring sends: a client's schedules and the runs they (and subscriber frequencies) made.

Writes go through `schedules.services`, reads through `schedules.selectors`.
"""

import uuid

from django.db import models
from django.db.models import Q

from mailqueue.models import Batch, Client, Priority

# The `frequency` of a topic's implicit schedule (one per topic): its runs are for the
# subscribers who chose a frequency, each tick those whose frequency is due at it.
FREQUENCY_SCHEDULE = "@chosen"


class MissedPolicy(models.TextChoices):
    """What a schedule does with the ticks it missed while no scheduler ran."""

    # One run, for the latest missed tick.
    RUN_ONCE = "run_once"
    # No run: the next run is the next tick to come.
    SKIP = "skip"


class Schedule(models.Model):
    """A cron schedule of one of a client's audiences: a topic's active subscribers (those
    without a frequency of their own) or a fixed list of addresses.

    The content is the schedule's own (a template slug, or subject with html/text) or, when it
    has none, its topic's.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: `schedule_client_created` starts with it.
    client = models.ForeignKey(
        Client, on_delete=models.CASCADE, related_name="schedules", db_index=False
    )
    name = models.CharField(max_length=200, blank=True, default="")
    topic = models.ForeignKey(
        "topics.Topic", null=True, blank=True, on_delete=models.CASCADE, related_name="schedules"
    )
    recipients = models.JSONField(default=list, blank=True)
    # FREQUENCY_SCHEDULE only on the implicit schedule of a topic's subscribers who chose a
    # frequency (one per topic, ticking at every frequency's ticks, kept in step with the
    # topic's send time by the scheduler's pass; not shown by the API). Each tick's audience is
    # the subscribers whose frequency is due then; explicit schedules' audience is the
    # subscribers without a frequency. (Older rows name one frequency each; they stay paused.)
    frequency = models.CharField(max_length=10, blank=True, default="")
    template = models.CharField(
        max_length=100, blank=True, default="", help_text="Slug of a stored template."
    )
    subject = models.CharField(max_length=998, blank=True, default="")
    html = models.TextField(blank=True, default="")
    text = models.TextField(blank=True, default="")
    context = models.JSONField(default=dict, blank=True)
    cron = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    active = models.BooleanField(default=True)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.LOW)
    missed = models.CharField(
        max_length=10, choices=MissedPolicy.choices, default=MissedPolicy.RUN_ONCE
    )
    # The next tick in UTC, recomputed after each run and on every edit; what the scheduler's
    # pass looks up.
    next_run_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "schedules"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["topic", "frequency"],
                name="schedule_topic_frequency",
                condition=~Q(frequency=""),
            ),
        ]
        indexes = [
            models.Index(fields=["client", "-created_at", "-id"], name="schedule_client_created"),
            # The scheduler's pass: active schedules due now (paused ones are not in it).
            models.Index(fields=["next_run_at"], name="schedule_due", condition=Q(active=True)),
        ]

    def __str__(self) -> str:
        return self.name or f"{self.cron} ({self.timezone})"


class ScheduleRun(models.Model):
    """One tick of a schedule (explicit, or a topic's frequency): one batch.

    The unique (schedule, tick) row is what makes a tick run once whatever the number of
    schedulers (a topic has one frequency schedule, so this is also the (topic, tick) key of
    its frequency subscribers: all those due at one tick are in one run). A topic's audience is
    expanded in chunks; each chunk's emails commit with `last_subscriber_id`, so an
    interrupted run resumes where it stopped.
    """

    # No index of its own: `schedule_run_tick` starts with it (and finds the latest run).
    schedule = models.ForeignKey(
        Schedule, on_delete=models.CASCADE, related_name="runs", db_index=False
    )
    tick = models.DateTimeField()
    # A run asked for through the API ("run now"), not a tick of the cron expression.
    manual = models.BooleanField(default=False)
    # The run's id is its batch's: `POST .../run/` answers one id for both.
    batch = models.OneToOneField(
        Batch, primary_key=True, on_delete=models.CASCADE, related_name="schedule_run"
    )
    # What every chunk sends, fixed when the run is made (an edit meanwhile does not mix two
    # contents in one run): `template` with the `template_id` and `template_version_id` every
    # chunk sends (loaded by id: an edit or deactivation of the template changes nothing), or
    # `subject`/`html`/`text`; `context` is the topic's merged with the schedule's; a fixed
    # list's `recipients`, or the subscriber `frequencies` of a topic's audience.
    content = models.JSONField(default=dict)
    last_subscriber_id = models.BigIntegerField(default=0)
    # Null while the audience is still being expanded.
    expanded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "schedule_runs"
        ordering = ["-tick"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "tick"], name="schedule_run_tick"),
        ]
        indexes = [
            # Runs whose expansion was interrupted, resumed by the scheduler's pass.
            models.Index(
                fields=["created_at"], name="schedule_run_unexpanded", condition=Q(expanded_at=None)
            ),
        ]

    def __str__(self) -> str:
        return f"run at {self.tick:%Y-%m-%d %H:%M}Z"
