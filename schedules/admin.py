"""Admin for recurring sends: schedules (checked and saved by the API's services) with a preview
of their next runs and their latest runs; pause, resume and run-now actions call the same
services the API calls."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from mailqueue.admin.helpers import admin_change_link, copy_saved_instance
from mailqueue.errors import MailqueueError
from schedules.models import Schedule
from schedules.selectors import schedule_next_runs, schedule_runs
from schedules.services import (
    schedule_create,
    schedule_pause,
    schedule_resume,
    schedule_run_now,
    schedule_update,
    schedule_validate,
)

# What the admin form edits; the topic is a row here (the services take its slug).
_FORM_FIELDS = (
    "client",
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


class ScheduleForm(forms.ModelForm):
    """A schedule, with the API's messages for a bad cron or time zone."""

    class Meta:
        model = Schedule
        fields = _FORM_FIELDS

    def clean(self) -> dict[str, Any]:
        """Run the service's checks on the fields given."""
        cleaned = super().clean()
        candidate = Schedule(
            **{name: cleaned.get(name) for name in _FORM_FIELDS if name in cleaned}
        )
        try:
            schedule_validate(schedule=candidate)
        except MailqueueError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return cleaned


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """Every client's schedules (a topic's frequency schedules too, read from their topic)."""

    form = ScheduleForm
    list_display = ("__str__", "client", "topic", "cron", "timezone", "active", "next_run_at")
    list_filter = ("active", "priority")
    list_select_related = ("client", "topic")
    raw_id_fields = ("client", "topic")
    readonly_fields = ("frequency", "next_run_at", "next_runs_preview", "runs_list")
    actions = ["pause", "resume", "run_now"]

    def get_fields(self, request: HttpRequest, obj: Schedule | None = None) -> tuple:
        """The editable fields, then what is computed (next runs, latest runs)."""
        return (*_FORM_FIELDS, *self.readonly_fields)

    @admin.display(description="next runs")
    def next_runs_preview(self, obj: Schedule) -> SafeString | str:
        """The next five ticks of the saved cron and time zone, local and UTC."""
        if obj.pk is None:
            return "Shown once the schedule is saved."
        rows = schedule_next_runs(schedule=obj)
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "", "<li>{} &nbsp; ({} UTC)</li>", ((r["local"], r["utc"]) for r in rows)
            ),
        )

    @admin.display(description="latest runs")
    def runs_list(self, obj: Schedule) -> SafeString | str:
        """The latest 20 runs, each linking to its batch."""
        runs = schedule_runs(schedule=obj) if obj.pk else []
        if not runs:
            return "No run yet."
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} — {} email(s){}</li>",
                (
                    (
                        admin_change_link(run.batch, f"{run.tick:%Y-%m-%d %H:%M}Z"),
                        run.batch.count,
                        " (run now)" if run.manual else "",
                    )
                    for run in runs
                ),
            ),
        )

    def save_model(
        self, request: HttpRequest, obj: Schedule, form: forms.Form, change: bool
    ) -> None:
        """Write through the services the API calls."""
        fields = {name: getattr(obj, name) for name in _FORM_FIELDS if name != "client"}
        fields["topic"] = obj.topic.slug if obj.topic_id else None
        if change:
            saved = schedule_update(schedule=obj, **fields)
        else:
            saved = schedule_create(client=obj.client, **fields)
        copy_saved_instance(target=obj, saved=saved)

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Pause each, as the API's pause does."""
        for schedule in queryset:
            schedule_pause(schedule=schedule)
        self.message_user(request, "Paused.", messages.SUCCESS)

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Resume each from its next tick, as the API's resume does."""
        for schedule in queryset:
            schedule_resume(schedule=schedule)
        self.message_user(request, "Resumed.", messages.SUCCESS)

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        """One run of each now, as the API's run does."""
        for schedule in queryset:
            schedule_run_now(schedule=schedule)
        self.message_user(request, f"Started {queryset.count()} run(s).", messages.SUCCESS)
