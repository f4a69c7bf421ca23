"""Pieces shared by the admin pages: site titles, links, the read-only mixin."""

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from django.urls import reverse
from django.utils.http import urlencode

admin.site.site_header = "Mailqueue"
admin.site.site_title = "Mailqueue admin"
admin.site.index_title = "Outbox, templates and API keys"

# Columns never shown on the email list; a page of 100 emails would otherwise load 100 bodies.
EMAIL_LIST_DEFERRED = (
    "html",
    "text",
    "context",
    "headers",
    "metadata",
    "last_error",
    "template__html",
    "template__text",
    "template__sample_context",
    "template__variables",
)


def email_changelist_url(**params: str) -> str:
    """The email list URL, filtered by query parameters."""
    url = reverse("admin:mailqueue_emailjob_changelist")
    return f"{url}?{urlencode(params)}" if params else url


class ReadOnlyAdminMixin:
    """No add; the detail page is view-only (changes happen through actions and services)."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Rows are created by the API and the workers, never by hand."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Model-level change permission (for actions), but every object is view-only."""
        if obj is not None:
            return False
        return super().has_change_permission(request)
