"""Admin for event rules (checked like the API checks them), the events handled, and a page of
the dead-letter stream whose entries can be replayed or deleted."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from redis.exceptions import RedisError

from event_sends import conf
from event_sends.models import EventRule, HandledEvent
from event_sends.selectors import dead_letter_list
from event_sends.services import (
    RULE_FIELDS,
    dead_letters_delete,
    dead_letters_replay,
    event_rule_create,
    event_rule_update,
    event_rule_validate,
)
from mailqueue.admin.helpers import EstimatedCountPaginator
from mailqueue.errors import ValidationFailed

DEAD_LETTERS_PER_PAGE = 100


class EventRuleForm(forms.ModelForm):
    """A rule, refused with the API's messages (the template must exist, paths be dotted,
    secret keys be context key names)."""

    class Meta:
        model = EventRule
        fields = ("client", *RULE_FIELDS)

    def clean(self) -> dict[str, Any]:
        """Run the service's checks on the fields given."""
        cleaned = super().clean()
        if "secret_keys" in cleaned and cleaned["secret_keys"] is None:
            cleaned["secret_keys"] = []  # the field left empty: no secret keys
        given = {name: cleaned[name] for name in RULE_FIELDS if name in cleaned}
        try:
            event_rule_validate(**given)
        except ValidationFailed as exc:
            field = exc.field if exc.field in self.fields else None
            self.add_error(field, exc.message)
        return cleaned


@admin.register(EventRule)
class EventRuleAdmin(admin.ModelAdmin):
    """Rules per client; the list links to the dead letters."""

    form = EventRuleForm
    list_display = ("event_type", "template", "client", "recipient_path", "priority", "created_at")
    list_filter = ("client", "priority")
    list_select_related = ("client",)
    search_fields = ("event_type", "template")
    change_list_template = "admin/event_sends/eventrule/change_list.html"

    def get_readonly_fields(self, request: HttpRequest, obj: EventRule | None = None) -> tuple:
        """A rule stays with its client: events handled are recorded per client."""
        return ("client",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: EventRule, form: forms.Form, change: bool):
        """Write through the services the API calls."""
        fields = {name: getattr(obj, name) for name in RULE_FIELDS}
        if change:
            changed = {name: fields[name] for name in form.changed_data if name in fields}
            event_rule_update(rule=obj, **changed)
        else:
            created = event_rule_create(client=obj.client, **fields)
            # The admin goes on with `obj` (its messages and redirect need the primary key).
            vars(obj).update(vars(created))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        """The list, with a link to the dead letters."""
        extra_context = {**(extra_context or {}), "dead_letters_stream": conf.events_dead_stream()}
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list[URLPattern]:
        """The admin's URLs plus the dead-letter page."""
        dead_letters = path(
            "dead-letters/",
            self.admin_site.admin_view(self.dead_letters_view),
            name="event_sends_dead_letters",
        )
        return [dead_letters, *super().get_urls()]

    def dead_letters_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the dead-letter stream, newest first. POST: replay or delete the entries given."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        url = reverse("admin:event_sends_dead_letters")
        if request.method == "POST":
            return self._dead_letters_act(request, url)
        before = request.GET.get("before") or None
        try:
            letters = dead_letter_list(count=DEAD_LETTERS_PER_PAGE + 1, before=before)
        except RedisError as exc:
            messages.error(request, f"Redis is unavailable: {exc}")
            letters = []
        context = {
            **self.admin_site.each_context(request),
            "title": f"Dead letters ({conf.events_dead_stream()})",
            "opts": self.model._meta,
            "letters": letters[:DEAD_LETTERS_PER_PAGE],
            "next_before": (
                letters[DEAD_LETTERS_PER_PAGE - 1].entry_id
                if len(letters) > DEAD_LETTERS_PER_PAGE
                else None
            ),
            "can_act": self.has_change_permission(request),
            "stream": conf.events_stream(),
        }
        return TemplateResponse(request, "admin/event_sends/dead_letters.html", context)

    def _dead_letters_act(self, request: HttpRequest, url: str) -> HttpResponse:
        """Replay (back onto the events stream) or delete the selected dead letters."""
        # Replaying creates emails: it needs the change permission, not just the view one.
        if not self.has_change_permission(request):
            raise PermissionDenied
        action = request.POST.get("action")
        entry_ids = request.POST.getlist("entry")
        if action not in ("replay", "delete") or not entry_ids:
            messages.warning(request, "Select dead letters, then Replay or Delete.")
            return HttpResponseRedirect(url)
        try:
            if action == "replay":
                count = dead_letters_replay(entry_ids=entry_ids)
                done = f"put back on {conf.events_stream()}"
            else:
                count = dead_letters_delete(entry_ids=entry_ids)
                done = "deleted"
        except RedisError as exc:
            messages.error(request, f"Redis is unavailable, nothing was changed: {exc}")
            return HttpResponseRedirect(url)
        messages.success(request, f"{count} dead letter(s) {done}.")
        return HttpResponseRedirect(url)


@admin.register(HandledEvent)
class HandledEventAdmin(admin.ModelAdmin):
    """Events handled, newest first: one row per (event, rule), read-only. Deleting a row lets
    the rule handle that event again if it is re-delivered or replayed."""

    list_display = ("handled_at", "event_type", "event_id", "client", "rule", "email_id")
    list_filter = ("client",)
    list_select_related = ("client", "rule")
    ordering = ("-handled_at", "-id")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    readonly_fields = ("client", "event_id", "event_type", "rule", "email_id", "handled_at")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Rows are written by the consumer only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Append-only."""
        return False
