"""Admin for recurring sends: schedules (checked and saved by the API's services) with a preview
of their next runs, which follows the cron and time zone fields while they are edited
(schedules/schedule_preview.js asks the `preview/` view), and their latest runs; pause, resume
and run-now actions call the same services the API calls."""

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET

from mailqueue.admin.helpers import admin_change_link, admin_url, copy_saved_instance
from mailqueue.errors import MailqueueError, ValidationFailed
from schedules.cron import cron_validate, timezone_validate
from schedules.models import Schedule
from schedules.selectors import schedule_next_runs, schedule_runs
from schedules.services import (
    SCHEDULE_FIELDS,
    schedule_build,
    schedule_create,
    schedule_pause,
    schedule_resume,
    schedule_run_now,
    schedule_update,
)

# What the admin form edits; the topic is a row here (the services take its slug).
_FORM_FIELDS = ("client", *SCHEDULE_FIELDS)


def _service_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The form's values as the services take them: the topic by its slug, no client."""
    fields = {name: values[name] for name in _FORM_FIELDS if name in values and name != "client"}
    topic = fields.get("topic")
    fields["topic"] = topic.slug if topic is not None else None
    return fields


def _next_runs_shown(*, cron: str, timezone: str) -> list[dict[str, str]]:
    """The next five ticks of a cron expression in a zone as the API's `next_runs` shows them
    (`local` with the zone's offset, `utc` ending in Z); ValidationFailed naming `cron` or
    `timezone` when one is not valid."""
    cron = cron_validate(cron)
    zone = timezone_validate(timezone)
    # An unsaved row: the ticks come from the very selector the API's `next_runs` uses.
    ticks = schedule_next_runs(schedule=Schedule(cron=cron, timezone=zone.key))
    return [
        {"local": tick["local"].isoformat(), "utc": tick["utc"].strftime("%Y-%m-%dT%H:%M:%SZ")}
        for tick in ticks
    ]


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

    class Media:
        js = ["schedules/schedule_preview.js"]

    def get_fields(self, request: HttpRequest, obj: Schedule | None = None) -> tuple:
        """The editable fields, then what is computed (next runs, latest runs)."""
        return (*_FORM_FIELDS, *self.readonly_fields)

    def get_urls(self) -> list:
        """The default URLs plus the next-runs preview of an unsaved cron and time zone."""
        return [
            admin_url(self, "preview/", require_GET(self.preview_view), "preview"),
            *super().get_urls(),
        ]

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """The next five ticks of `?cron=...&timezone=...` (GET, JSON, nothing saved); a bad
        expression or zone is a 400 whose `error` names the field."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            shown = _next_runs_shown(
                cron=request.GET.get("cron", ""), timezone=request.GET.get("timezone", "")
            )
        except ValidationFailed as exc:
            return JsonResponse(
                {"error": f"{exc.field}: {exc.message}", "field": exc.field}, status=400
            )
        return JsonResponse({"next_runs": shown})

    @admin.display(description="next runs")
    def next_runs_preview(self, obj: Schedule) -> SafeString:
        """The next five ticks of the saved cron and time zone, local and UTC, in the area the
        live preview redraws while cron or time zone is edited."""
        if obj._state.adding:
            # The primary key is set before the save, so only `adding` tells a new schedule.
            shown = format_html('<p class="help">{}</p>', "Shown once the schedule is saved.")
        else:
            # A refused save never puts the refused value on the row: these are valid.
            runs = _next_runs_shown(cron=obj.cron, timezone=obj.timezone)
            shown = format_html(
                "<ul>{}</ul>",
                format_html_join(
                    "", "<li>{} ({})</li>", ((run["local"], run["utc"]) for run in runs)
                ),
            )
        return format_html(
            '<div id="schedule-next-runs" data-preview-url="{}" aria-live="polite">{}</div>',
            reverse(f"{self.admin_site.name}:schedules_schedule_preview"),
            shown,
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
