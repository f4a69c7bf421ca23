"""Pieces shared by the admin pages: site titles, links, the read-only mixin, bulk reports."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from django.urls import reverse
from django.utils.http import urlencode

from mailqueue.selectors import email_status_counts
from mailqueue.services import BulkResult

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


@dataclass
class BulkOutcome:
    """Totals of a bulk service run over chunks, with the current status of skipped emails."""

    changed: int = 0
    skipped: int = 0
    skipped_by_status: dict[str, int] = field(default_factory=dict)

    def skipped_breakdown(self) -> str:
        """Skipped emails per status, e.g. "3 sent, 1 queued" ("" when none were skipped)."""
        parts = [f"{count} {status}" for status, count in sorted(self.skipped_by_status.items())]
        gone = self.skipped - sum(self.skipped_by_status.values())
        if gone > 0:
            parts.append(f"{gone} deleted")
        return ", ".join(parts)


def emails_bulk_apply(
    chunks: Iterable[list[Any]], service: Callable[..., BulkResult]
) -> BulkOutcome:
    """Run a bulk service (emails_retry_many, emails_cancel_many) chunk by chunk, and count."""
    outcome = BulkOutcome()
    for chunk in chunks:
        result = service(email_ids=chunk)
        outcome.changed += result.changed
        outcome.skipped += result.skipped
        if result.skipped:
            changed = set(result.changed_ids)
            skipped_ids = [pk for pk in chunk if pk not in changed]
            for status, count in email_status_counts(email_ids=skipped_ids).items():
                outcome.skipped_by_status[status] = outcome.skipped_by_status.get(status, 0) + count
    return outcome


def bulk_report(*, verb: str, outcome: BulkOutcome, allowed: str) -> str:
    """What a bulk action did: how many emails changed, how many were skipped and why."""
    why = f" ({outcome.skipped_breakdown()})" if outcome.skipped else ""
    return (
        f"{verb} {outcome.changed} email(s); skipped {outcome.skipped} that were not "
        f"{allowed}{why}."
    )


def retry_report(outcome: BulkOutcome) -> str:
    """The message after retrying emails in bulk."""
    return bulk_report(verb="Retried", outcome=outcome, allowed="failed or cancelled")


def cancel_report(outcome: BulkOutcome) -> str:
    """The message after cancelling emails in bulk."""
    return bulk_report(verb="Cancelled", outcome=outcome, allowed="scheduled, queued or retrying")
