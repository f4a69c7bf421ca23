"""Admin for webhook endpoints (disabled ones stand out), deliveries and their attempts, with
replays of one delivery or of everything since a time."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from client_webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from client_webhooks.services import webhook_deliveries_replay, webhook_endpoint_update
from mailqueue.admin.helpers import EstimatedCountPaginator


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Endpoints per client; one disabled after repeated failures shows when it was."""

    list_display = ("url", "client", "active", "consecutive_failures", "disabled_at", "created_at")
    list_filter = ("active", "client")
    list_select_related = ("client",)
    search_fields = ("url",)
    readonly_fields = ("client", "consecutive_failures", "disabled_at", "created_at")
    fields = ("client", "url", "events", "active", *readonly_fields[1:])
    actions = ("enable", "disable")

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Clients register endpoints through the API, which hands them the secret."""
        return False

    @admin.action(description="Enable (clears the failure count)", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Turn the endpoints on again through the service."""
        for endpoint in queryset:
            webhook_endpoint_update(endpoint=endpoint, active=True)
        self.message_user(request, f"{queryset.count()} endpoint(s) enabled.", messages.SUCCESS)

    @admin.action(description="Disable", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Turn the endpoints off through the service."""
        for endpoint in queryset:
            webhook_endpoint_update(endpoint=endpoint, active=False)
        self.message_user(request, f"{queryset.count()} endpoint(s) disabled.", messages.SUCCESS)


class WebhookAttemptInline(admin.TabularInline):
    """The attempts of one delivery, read-only."""

    model = WebhookAttempt
    fields = ("created_at", "status_code", "duration_ms", "response_excerpt", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Attempts are written by deliveries only."""
        return False


class ReplaySinceForm(forms.Form):
    """When to replay from, and optionally one endpoint."""

    since = forms.DateTimeField(help_text="UTC, e.g. 2026-01-31 14:00")
    endpoint = forms.ModelChoiceField(WebhookEndpoint.objects.all(), required=False)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Deliveries newest first, with each attempt; replay selected ones or all since a time."""

    list_display = ("created_at", "event_type", "endpoint", "status", "attempts", "delivered_at")
    list_filter = ("status", "event_type")
    list_select_related = ("endpoint",)
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    readonly_fields = (
        "endpoint",
        "event_id",
        "event_type",
        "payload",
        "status",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    )
    fields = readonly_fields
    inlines = (WebhookAttemptInline,)
    actions = ("replay",)
    change_list_template = "admin/client_webhooks/webhookdelivery/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Deliveries come from events only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Read-only; replays go through the actions."""
        return False

    def has_replay_permission(self, request: HttpRequest) -> bool:
        """Replaying sends requests to clients' endpoints: it needs the change permission on
        deliveries, not just the view one (the rows themselves stay read-only)."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        """The list, with the "Replay since a time…" link only for those who may replay."""
        extra_context = {**(extra_context or {}), "can_replay": self.has_replay_permission(request)}
        return super().changelist_view(request, extra_context)

    @admin.action(description="Replay selected deliveries", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Send the selected deliveries again."""
        count = webhook_deliveries_replay(delivery_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} deliver(ies) queued again.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        """The admin's URLs plus the replay-since form."""
        replay = path(
            "replay-since/",
            self.admin_site.admin_view(self.replay_since_view),
            name="client_webhooks_webhookdelivery_replay_since",
        )
        return [replay, *super().get_urls()]

    def replay_since_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the form. POST: replay every delivery since the time (of one endpoint if given)."""
        if not self.has_replay_permission(request):
            raise PermissionDenied
        form = ReplaySinceForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            since, endpoint = form.cleaned_data["since"], form.cleaned_data["endpoint"]
            ids = WebhookDelivery.objects.filter(created_at__gte=since)
            if endpoint is not None:
                ids = ids.filter(endpoint=endpoint)
            count = webhook_deliveries_replay(delivery_ids=ids.values_list("pk", flat=True))
            self.message_user(request, f"{count} deliver(ies) queued again.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:client_webhooks_webhookdelivery_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Replay webhook deliveries since a time",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/client_webhooks/replay_since.html", context)
