"""Helpers that keep the admin fast on tables with millions of rows, and its HTML safe."""

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString

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
    for field in saved._meta.concrete_fields:
        setattr(target, field.attname, getattr(saved, field.attname))
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


def filter_by_uuid(queryset: QuerySet, term: str) -> QuerySet | None:
    """The row whose primary key is this UUID, or None if the term is not a UUID."""
    try:
        return queryset.filter(pk=uuid.UUID(term))
    except ValueError:
        return None
