"""Reads of stored templates."""

import difflib
import json
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Prefetch, QuerySet
from django.http import Http404

from mailqueue.errors import TemplateNotFound
from templates_app.models import EmailTemplate, EmailTemplateVersion
from templates_app.services import CONTENT_FIELDS


def _versions() -> Prefetch:
    return Prefetch(
        "versions",
        queryset=EmailTemplateVersion.objects.only(
            "template_id", "number", "created_at", "created_by"
        ).order_by("-number"),
    )


def template_list() -> QuerySet[EmailTemplate]:
    """All templates, by slug."""
    return EmailTemplate.objects.order_by("slug").prefetch_related(_versions())


def template_get(*, slug: str) -> EmailTemplate:
    """One template by slug, or 404."""
    template = EmailTemplate.objects.filter(slug=slug).prefetch_related(_versions()).first()
    if template is None:
        raise Http404(f"No template with slug '{slug}'.")
    return template


def template_version_list(*, template: EmailTemplate) -> QuerySet[EmailTemplateVersion]:
    """A template's versions, newest first, without their content."""
    return (
        EmailTemplateVersion.objects.filter(template=template)
        .only("template_id", "number", "created_by", "created_at")
        .order_by("-number")
    )


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff: kind is "hunk", "removed", "added" or "context"."""

    kind: str
    text: str


@dataclass(frozen=True)
class FieldDiff:
    """The diff of one content field between an old version and the current content."""

    name: str
    changed: bool
    lines: tuple[DiffLine, ...]


@dataclass(frozen=True)
class TemplateVersionDiff:
    """What differs between one version of a template and its current content."""

    version: EmailTemplateVersion
    current_number: int
    fields: tuple[FieldDiff, ...]

    @property
    def changed(self) -> bool:
        """True when restoring the version would change the template."""
        return any(field.changed for field in self.fields)


DIFF_KINDS = {"@": "hunk", "-": "removed", "+": "added", " ": "context"}


def _diffable(value: Any) -> str:
    if isinstance(value, str):
        return value
    # Sorted keys: the same context stored with keys in another order is not a change.
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _diff_line(line: str) -> DiffLine:
    kind = DIFF_KINDS[line[:1]]
    # A hunk header ("@@ -1,3 +1,4 @@") is shown whole; other lines without their marker.
    return DiffLine(kind=kind, text=line if kind == "hunk" else line[1:])


def _field_diff(name: str, old: Any, new: Any) -> FieldDiff:
    old_text, new_text = _diffable(old), _diffable(new)
    # The file headers (---/+++) are dropped: the page names both sides once for every field.
    lines = list(
        difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), lineterm="", n=3)
    )[2:]
    return FieldDiff(
        name=name,
        # Compared on the values, not the lines: a change of line endings alone still counts.
        changed=old_text != new_text,
        lines=tuple(_diff_line(line) for line in lines),
    )


def template_version_diff(*, template: EmailTemplate, number: int) -> TemplateVersionDiff:
    """Each content field of version `number` diffed against the current content, or 404."""
    version = EmailTemplateVersion.objects.filter(template=template, number=number).first()
    if version is None:
        raise Http404(f"Template '{template.slug}' has no version {number}.")
    return TemplateVersionDiff(
        version=version,
        current_number=template.version,
        fields=tuple(
            _field_diff(name, getattr(version, name), getattr(template, name))
            for name in CONTENT_FIELDS
        ),
    )


# Every templated send runs this lookup: one hand-written query for the template and its
# current version, where the ORM needs two queries that each cost more CPU to build than
# PostgreSQL spends answering them.
# In the model's field order, as Model.from_db expects.
_ACTIVE_TEMPLATE_FIELDS = [
    "id",
    "slug",
    "name",
    "subject",
    "variables",
    "is_active",
    "track_opens",
    "track_clicks",
    "version",
    "created_at",
    "updated_at",
]
_ACTIVE_TEMPLATE_SQL = (
    "SELECT t.id, t.slug, t.name, t.subject, t.variables, t.is_active, t.track_opens, "
    "t.track_clicks, t.version, t.created_at, t.updated_at, v.id, v.subject "
    "FROM email_templates t LEFT JOIN email_template_versions v "
    "ON v.template_id = t.id AND v.number = t.version "
    "WHERE t.slug = %s AND t.is_active"
)


def template_get_active(*, slug: str, field: str = "template") -> EmailTemplate:
    """The active template with this slug, or TemplateNotFound naming the field.

    Its current version comes with it, so `template_current_version` then costs no query.
    Accepting an email needs neither's bodies: those are loaded only if read.
    """
    with connection.cursor() as cursor:
        cursor.execute(_ACTIVE_TEMPLATE_SQL, [slug])
        row = cursor.fetchone()
    if row is None:
        raise TemplateNotFound(f"No active template with slug '{slug}'.", field=field)
    *values, version_id, version_subject = row
    variables = EmailTemplate._meta.get_field("variables")
    values[4] = variables.from_db_value(values[4], None, connection)
    # The bodies (html, text) stay deferred: loaded only if read.
    template = EmailTemplate.from_db(connection.alias, _ACTIVE_TEMPLATE_FIELDS, values)
    template._current_version = (
        None
        if version_id is None
        else EmailTemplateVersion.from_db(
            connection.alias,
            ["id", "template_id", "number", "subject"],
            [version_id, template.pk, template.version, version_subject],
        )
    )
    return template
