"""Admin for recurring sends: schedules (checked and saved by the API's services) with a preview
of their next runs and their latest runs; pause, resume and run-now actions call the same
services the API calls."""

from collections.abc import Callable
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
    schedule_build,
    schedule_create,
    schedule_pause,
    schedule_resume,
    schedule_run_now,
    schedule_update,
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


def _service_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The form's values as the services take them: the topic by its slug, no client."""
    fields = {name: values[name] for name in _FORM_FIELDS if name in values and name != "client"}
    topic = fields.get("topic")
    fields["topic"] = topic.slug if topic is not None else None
    return fields


class ScheduleForm(forms.ModelForm):
    """A schedule, checked as the API checks it (the topic is the client's, the recipients
    are addresses, cron and time zone valid), with the API's messages."""

    class Meta:
        model = Schedule
        fields = _FORM_FIELDS

    def clean(self) -> dict[str, Any]:
        """Run the service's checks on the fields given; each refusal is a field's error."""
        cleaned = super().clean()
        client = cleaned.get("client")
        if client is None or self.errors:
            return cleaned
        try:
            schedule_build(client=client, **_service_fields(cleaned))
        except MailqueueError as exc:
            # `recipients[2]` is the recipients field's error.
            field = (exc.field or "").split("[")[0]
            self.add_error(field if field in self.fields else None, exc.message)
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
        fields = _service_fields({name: getattr(obj, name) for name in _FORM_FIELDS})
        if change:
            saved = schedule_update(schedule=obj, **fields)
        else:
            saved = schedule_create(client=obj.client, **fields)
        copy_saved_instance(target=obj, saved=saved)

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        service: Callable[..., Any],
        done: str,
    ) -> None:
        """Call a service on each schedule; one it refuses is reported, the others go on."""
        succeeded = 0
        for schedule in queryset:
            try:
                service(schedule=schedule)
            except MailqueueError as exc:
                self.message_user(request, f"{schedule}: {exc.message}", messages.ERROR)
            else:
                succeeded += 1
        if succeeded:
            self.message_user(request, done.format(count=succeeded), messages.SUCCESS)

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Pause each, as the API's pause does."""
        self._each(request, queryset, schedule_pause, "Paused {count} schedule(s).")

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Resume each from its next tick, as the API's resume does."""
        self._each(request, queryset, schedule_resume, "Resumed {count} schedule(s).")

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        """One run of each now, as the API's run does."""
        self._each(request, queryset, schedule_run_now, "Started {count} run(s).")
