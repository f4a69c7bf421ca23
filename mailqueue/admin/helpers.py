"""What the admin pages share: fast lists on tables with millions of rows, safe HTML, links, the
read-only bases, and the reports of bulk actions that call services."""

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import escape, format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from mailqueue.selectors.emails import email_status_counts
from mailqueue.services import BulkResult, emails_cancel_many, emails_retry_many

# Below this many rows an exact COUNT(*) is cheap enough, and more useful than an estimate.
ESTIMATE_THRESHOLD = 10_000
ACTION_CHUNK_SIZE = 1000

# Inline styles: the admin has no stylesheet of ours, and these blocks appear on several pages.
PRE_STYLE = (
    "white-space: pre-wrap; word-break: break-word; max-height: 32em; overflow: auto; "
    "margin: 0; padding: 8px; background: var(--darkened-bg); border: 1px solid "
    "var(--hairline-color); font-size: 12px;"
)
IFRAME_STYLE = (
    "width: 100%; min-width: 480px; height: 520px; border: 1px solid var(--hairline-color); "
    "background: #fff;"
)


def table_row_estimate(queryset: QuerySet) -> int | None:
    """PostgreSQL's planner estimate of the table's size for an unfiltered queryset, else None."""
    query = queryset.query
    if query.where or query.is_sliced or query.combinator or query.distinct:
        return None
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        # to_regclass follows search_path, so a same-named table in another schema is ignored.
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    return row[0] if row else None


class EstimatedCountPaginator(Paginator):
    """Counts with the planner estimate on a big unfiltered table; COUNT(*) there takes seconds."""

    estimate_threshold = ESTIMATE_THRESHOLD

    @cached_property
    def count(self) -> int:
        """The estimate for an unfiltered big table, the exact count otherwise."""
        if isinstance(self.object_list, QuerySet):
            estimate = table_row_estimate(self.object_list)
            # reltuples is -1 (or 0) before the first ANALYZE: fall back to counting.
            if estimate is not None and estimate > self.estimate_threshold:
                return estimate
        return super().count


def pk_chunks(queryset: QuerySet, *, size: int = ACTION_CHUNK_SIZE) -> Iterator[list[Any]]:
    """The primary keys of a queryset in lists of `size`, read page by page in key order.

    Paging by key (not by offset) means rows that stop matching the filter once an action has
    changed them (say, `status=failed` after a retry) never make later rows be skipped.
    """
    keys = queryset.order_by("pk").values_list("pk", flat=True)
    last = None
    while True:
        page = keys if last is None else keys.filter(pk__gt=last)
        chunk = list(page[:size])
        if not chunk:
            return
        yield chunk
        last = chunk[-1]


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


class DetailToolsMixin:
    """A detail page whose template shows tools (buttons) for the object: `detail_tools` says
    which, as template context."""

    def detail_tools(self, request: HttpRequest, obj: Model | None) -> dict[str, Any]:
        """Context flags for the detail page's tools (none by default)."""
        return {}

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The detail page, with `detail_tools` in its context."""
        obj = self.get_object(request, unquote(object_id))
        extra_context = {**self.detail_tools(request, obj), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context)


class AppendOnlyAdminMixin:
    """History rows (delivery attempts, tracking events) that services append: nobody adds,
    edits or deletes them here."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Only services write these rows."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """History is never edited."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """History is never deleted by hand."""
        return False


class LightChangeListMixin:
    """Defers heavy columns (bodies, JSON) on the change list only; detail pages load them all."""

    changelist_defer: tuple[str, ...] = ()

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        """The ChangeList class, deferring `changelist_defer` in its queryset."""
        base = super().get_changelist(request, **kwargs)
        deferred = self.changelist_defer
        if not deferred:
            return base

        class DeferringChangeList(base):
            def get_queryset(
                self, request: HttpRequest, exclude_parameters: Any = None
            ) -> QuerySet:
                """The change list's queryset without the deferred columns."""
                return super().get_queryset(request, exclude_parameters).defer(*deferred)

        return DeferringChangeList


def pretty_json(value: Any) -> SafeString:
    """A JSON value indented in a <pre>, escaped."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder)
    return format_html('<pre style="{}">{}</pre>', PRE_STYLE, text)


def preformatted(text: str, *, empty: str = "(empty)") -> SafeString:
    """Plain text in a <pre>, escaped."""
    if not text:
        return format_html('<span class="quiet">{}</span>', empty)
    # escape(), not format_html's conditional escaping: rendered template output is marked
    # safe, and must still be shown as text here.
    return format_html('<pre style="{}">{}</pre>', PRE_STYLE, escape(text))


def sandboxed_html(html: str, *, empty: str = "(no HTML part)") -> SafeString:
    """HTML shown in an iframe with every sandbox restriction (no scripts, forms or same-origin).

    The document travels in `srcdoc`, always attribute-escaped (rendered template output is
    marked safe, so format_html alone would leave it as is): nothing in it can break out of
    the attribute into the admin page.
    """
    if not html:
        return format_html('<span class="quiet">{}</span>', empty)
    return format_html(
        '<iframe sandbox="" referrerpolicy="no-referrer" title="HTML preview" style="{}" '
        'srcdoc="{}"></iframe>',
        IFRAME_STYLE,
        escape(html),
    )


def rendered_parts(*, subject: str, html: str, text: str, note: str = "") -> SafeString:
    """Subject, text in a <pre> and HTML in a sandboxed iframe, as one admin block."""
    return format_html(
        '<div style="width: 100%;">{}<p><strong>Subject:</strong> {}</p>'
        "<p><strong>Text</strong></p>{}<p><strong>HTML</strong></p>{}</div>",
        format_html('<p class="help">{}</p>', note) if note else "",
        escape(subject) if subject else "(empty)",
        preformatted(text, empty="(no text part)"),
        sandboxed_html(html),
    )


def error_block(message: str) -> SafeString:
    """An error message styled like Django admin's form errors."""
    return format_html('<ul class="errorlist"><li>{}</li></ul>', escape(message))


def copy_saved_instance(*, target: Model, saved: Model) -> None:
    """Turn the admin's unsaved form instance into the row a service created.

    The admin logs and redirects to the instance it passed to save_model; copying the saved
    row's fields into it lets a service (not the form) do the insert.
    """
    for model_field in saved._meta.concrete_fields:
        setattr(target, model_field.attname, getattr(saved, model_field.attname))
    target._state.adding = False
    target._state.db = saved._state.db


def admin_change_link(obj: Model | None, text: str | None = None) -> SafeString | str:
    """A link to an object's admin change page (or '-' for None)."""
    if obj is None:
        return "-"
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text if text is not None else str(obj))


def admin_url(model_admin: Any, route: str, view: Callable[..., Any], suffix: str) -> URLPattern:
    """A custom admin page of a ModelAdmin, behind the admin's login, named like Django's own
    (`admin:<app>_<model>_<suffix>`)."""
    opts = model_admin.opts
    return path(
        route,
        model_admin.admin_site.admin_view(view),
        name=f"{opts.app_label}_{opts.model_name}_{suffix}",
    )


def email_link(email_id: Any, *, css_class: str = "") -> SafeString | str:
    """A link to an email's admin page from its id alone (no query per row), or '-'."""
    if not email_id:
        return "-"
    url = reverse("admin:mailqueue_emailjob_change", args=[email_id])
    if css_class:
        return format_html('<a class="{}" href="{}">{}</a>', css_class, url, email_id)
    return format_html('<a href="{}">{}</a>', url, email_id)


class IdSearchMixin:
    """Search that finds a row by its exact id (a UUID primary key) with one index probe.

    Any other term goes to `search_beyond_id`, which finds nothing unless a subclass says how.
    """

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """The row with this id, else what `search_beyond_id` finds; never duplicates."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            return self.search_beyond_id(queryset, term), False

    def search_beyond_id(self, queryset: QuerySet, term: str) -> QuerySet:
        """Rows matching a term that is not a UUID: none."""
        return queryset.none()


def email_changelist_url(**params: str) -> str:
    """The email list URL, filtered by query parameters."""
    url = reverse("admin:mailqueue_emailjob_changelist")
    return f"{url}?{urlencode(params)}" if params else url


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


def _bulk_report(*, verb: str, outcome: BulkOutcome, allowed: str) -> str:
    """What a bulk action did: how many emails changed, how many were skipped and why."""
    why = f" ({outcome.skipped_breakdown()})" if outcome.skipped else ""
    return (
        f"{verb} {outcome.changed} email(s); skipped {outcome.skipped} that were not "
        f"{allowed}{why}."
    )


def _emails_bulk_action(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    service: Callable[..., BulkResult],
    verb: str,
    allowed: str,
) -> None:
    outcome = emails_bulk_apply(pk_chunks(queryset), service)
    level = messages.SUCCESS if outcome.changed else messages.WARNING
    model_admin.message_user(
        request, _bulk_report(verb=verb, outcome=outcome, allowed=allowed), level
    )


def emails_retry_bulk(
    model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> None:
    """Retry the failed and cancelled emails of a queryset, 1000 at a time, and say what changed."""
    _emails_bulk_action(
        model_admin,
        request,
        queryset,
        service=emails_retry_many,
        verb="Retried",
        allowed="failed or cancelled",
    )


def emails_cancel_bulk(
    model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> None:
    """Cancel the scheduled, queued and retrying emails of a queryset, 1000 at a time, and say
    what changed."""
    _emails_bulk_action(
        model_admin,
        request,
        queryset,
        service=emails_cancel_many,
        verb="Cancelled",
        allowed="scheduled, queued or retrying",
    )
