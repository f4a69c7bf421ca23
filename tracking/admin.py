"""Admin for tracking events: a read-only, append-only log, including ESP events that name no
email we know (unlinked)."""

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from mailqueue.admin.helpers import AppendOnlyAdminMixin, EstimatedCountPaginator, pretty_json
from tracking.models import TrackingEvent

# The email columns the list shows; the rest of the (wide) email row is not loaded.
EVENT_LIST_FIELDS = (
    "email",
    "event_type",
    "occurred_at",
    "provider",
    "esp",
    "recipient",
    "email__id",
    "email__recipient",
    "email__status",
)

# What an ESP's webhook reported besides the common columns.
ESP_FIELDS = (
    "event_key",
    "message_id",
    "reject_reason",
    "mta_response",
    "click_url",
    "user_agent",
)


@admin.register(TrackingEvent)
class TrackingEventAdmin(AppendOnlyAdminMixin, admin.ModelAdmin):
    """Events, newest first, linked or not; filtered by type (indexed with the time)."""

    list_display = ("occurred_at", "event_type", "email_link", "provider", "esp", "recipient")
    list_display_links = ("occurred_at",)
    list_select_related = ("email",)
    # The date filter also allows the dashboard's `occurred_at__gte` links.
    list_filter = ("event_type", ("occurred_at", admin.DateFieldListFilter))
    ordering = ("-occurred_at", "-id")
    sortable_by = ("occurred_at",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    fields = (
        "email_link",
        "event_type",
        "occurred_at",
        "provider",
        "recipient",
        "description",
        "data_display",
        "esp",
        *ESP_FIELDS,
        "raw_display",
        "created_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Events with only the email columns the pages show."""
        return (
            super()
            .get_queryset(request)
            .select_related("email")
            # `raw` (the ESP's whole payload) stays deferred: only a detail page loads it.
            .only(*EVENT_LIST_FIELDS, *ESP_FIELDS, "description", "data", "created_at")
        )

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Events are history; only superusers may remove them."""
        return request.user.is_superuser

    @admin.display(description="email")
    def email_link(self, obj: TrackingEvent) -> SafeString | str:
        """The email the event belongs to, or a dash for an ESP event naming no known email."""
        if obj.email_id is None:
            return "— (unlinked)"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:mailqueue_emailjob_change", args=[obj.email_id]),
            f"{obj.email.recipient} [{obj.email.status}]",
        )

    @admin.display(description="data")
    def data_display(self, obj: TrackingEvent) -> SafeString:
        """Provider data as indented JSON."""
        return pretty_json(obj.data)

    @admin.display(description="ESP payload")
    def raw_display(self, obj: TrackingEvent) -> SafeString:
        """The ESP's own event as it was posted, as indented JSON."""
        return pretty_json(obj.raw)
