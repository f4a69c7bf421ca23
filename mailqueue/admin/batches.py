"""Batches admin: counts per status and links to their emails."""

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from mailqueue.admin.helpers import (
    EstimatedCountPaginator,
    IdSearchMixin,
    LightChangeListMixin,
    ReadOnlyAdminMixin,
    email_changelist_url,
    pretty_json,
)
from mailqueue.models import Batch
from mailqueue.selectors.batches import batch_status_counts


@admin.register(Batch)
class BatchAdmin(IdSearchMixin, LightChangeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Batches: how far along their emails are, and a link to them."""

    list_display = ("id", "client", "template", "count", "priority", "created_at")
    list_select_related = ("client", "template")
    list_filter = ("priority",)
    sortable_by = ("created_at",)
    search_fields = ("=id",)
    search_help_text = "Batch id (UUID)."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    changelist_defer = ("context", "template__html", "template__text", "template__sample_context")
    readonly_fields = (
        "id",
        "client",
        "template",
        "count",
        "priority",
        "send_at",
        "tags",
        "created_at",
        "context_display",
        "status_counts",
        "emails_link",
    )
    fields = readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Only superusers may delete batches (deleting one deletes its emails)."""
        return request.user.is_superuser

    @admin.display(description="context")
    def context_display(self, obj: Batch) -> SafeString:
        """The context shared by every email of the batch."""
        return pretty_json(obj.context)

    @admin.display(description="emails by status")
    def status_counts(self, obj: Batch) -> SafeString:
        """How many of the batch's emails are in each status, each linking to them."""
        counts = batch_status_counts(batch=obj)
        return format_html_join(
            "",
            '<div><a href="{}">{}</a>: {}</div>',
            (
                (
                    email_changelist_url(batch__id__exact=str(obj.pk), status__exact=status),
                    status,
                    count,
                )
                for status, count in counts.items()
            ),
        )

    @admin.display(description="emails")
    def emails_link(self, obj: Batch) -> SafeString:
        """All emails of the batch."""
        return format_html(
            '<a href="{}">Show the {} email(s) of this batch</a>',
            email_changelist_url(batch__id__exact=str(obj.pk)),
            obj.count,
        )
