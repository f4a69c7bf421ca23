"""Writes and checks for stored templates."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from mailqueue.errors import TemplateRenderError, ValidationFailed
from templates_app.models import EmailTemplate, EmailTemplateVersion
from templates_app.rendering import RenderedContent, compile_part, render_content

TEMPLATE_FIELDS = (
    "name",
    "subject",
    "html",
    "text",
    "variables",
    "sample_context",
    "is_active",
    "track_opens",
    "track_clicks",
)


def template_validate_sources(*, subject: str, html: str, text: str) -> None:
    """Raise TemplateRenderError naming the part and line if any part does not compile."""
    for part, source in (("subject", subject), ("html", html), ("text", text)):
        compile_part(source=source, part=part)


def template_check_context(
    *, template: EmailTemplate, context: dict, field: str = "context"
) -> None:
    """Raise ValidationFailed if the context lacks a variable the template requires."""
    missing = [name for name in template.variables if name not in context]
    if missing:
        raise ValidationFailed(
            f"Missing required template variable(s) for '{template.slug}': {', '.join(missing)}.",
            field=field,
        )


def template_render(*, template: EmailTemplate, context: dict) -> RenderedContent:
    """Render a stored template with a context (after checking required variables)."""
    template_check_context(template=template, context=context)
    return render_content(
        subject=template.subject, html=template.html, text=template.text, context=context
    )


# Fields whose change makes a new version (name and is_active are not content).
CONTENT_FIELDS = ("subject", "html", "text", "variables", "sample_context")


def _snapshot(template: EmailTemplate, created_by: str) -> EmailTemplateVersion:
    """Record the template's current content as its next version."""
    template.version += 1
    EmailTemplate.objects.filter(pk=template.pk).update(version=template.version)
    return EmailTemplateVersion.objects.create(
        template=template,
        number=template.version,
        created_by=created_by[:200],
        **{name: getattr(template, name) for name in CONTENT_FIELDS},
    )


@transaction.atomic
def template_create(*, slug: str, created_by: str = "", **fields) -> EmailTemplate:
    """Create a template (version 1) after checking that every part compiles."""
    if EmailTemplate.objects.filter(slug=slug).exists():
        raise ValidationFailed(f"A template with slug '{slug}' already exists.", field="slug")
    template = EmailTemplate(slug=slug, **{k: v for k, v in fields.items() if k in TEMPLATE_FIELDS})
    template_validate_sources(subject=template.subject, html=template.html, text=template.text)
    template.save()
    _snapshot(template, created_by)
    return template


@transaction.atomic
def template_update(*, template: EmailTemplate, created_by: str = "", **fields) -> EmailTemplate:
    """Update a template; a change of content adds a version, emails keep the one they used."""
    # Lock the row so two concurrent edits get distinct version numbers.
    current = EmailTemplate.objects.select_for_update().get(pk=template.pk)
    template.version = current.version
    for key, value in fields.items():
        if key in TEMPLATE_FIELDS:
            setattr(template, key, value)
    template_validate_sources(subject=template.subject, html=template.html, text=template.text)
    template.save()
    if any(getattr(template, name) != getattr(current, name) for name in CONTENT_FIELDS):
        _snapshot(template, created_by)
    return template


def template_restore(
    *, template: EmailTemplate, number: int, created_by: str = ""
) -> EmailTemplate:
    """Make an old version's content current again (as a new version; history is kept)."""
    version = EmailTemplateVersion.objects.filter(template=template, number=number).first()
    if version is None:
        raise ValidationFailed(
            f"Template '{template.slug}' has no version {number}.", field="version"
        )
    return template_update(
        template=template,
        created_by=f"{created_by} (restore of v{number})"
        if created_by
        else f"restore of v{number}",
        **{name: getattr(version, name) for name in CONTENT_FIELDS},
    )


def template_current_version(*, template: EmailTemplate) -> EmailTemplateVersion | None:
    """The version row holding the template's current content (loaded by template_get_active)."""
    # The selector's copy is used only while it still matches the instance's version number.
    loaded = getattr(template, "_current_version", None)
    if loaded is not None and loaded.number == template.version:
        return loaded
    return EmailTemplateVersion.objects.filter(template=template, number=template.version).first()


def template_delete(*, template: EmailTemplate) -> None:
    """Delete a template never used by an email, or deactivate one that was (history stays)."""
    if template.emails.exists() or template.batches.exists():
        template.is_active = False
        template.save(update_fields=["is_active", "updated_at"])
    else:
        template.delete()


@dataclass(frozen=True)
class TemplatePreview:
    """Unsaved sources rendered for the editor: each part's output, or the error that stopped it."""

    # None for a part that failed: its error is in `errors` under the part's name.
    subject: str | None
    html: str | None
    text: str | None
    errors: dict[str, str]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every part rendered."""
        return not self.errors


def template_preview(
    *, subject: str, html: str, text: str, context: dict, variables: Sequence[str] = ()
) -> TemplatePreview:
    """Render unsaved sources; errors and missing variables are reported, never raised."""
    missing = [name for name in variables if name not in context]
    warnings = (
        (
            "The sample context is incomplete: it lacks the required variable(s) "
            f"{', '.join(missing)}; the preview renders them as empty.",
        )
        if missing
        else ()
    )
    sources = {"subject": subject, "html": html, "text": text}
    errors: dict[str, str] = {}
    # render_content stops at the first part that fails: render again without that part, so
    # the editor gets every other part's output and each broken part's own error at once.
    while True:
        try:
            content = render_content(context=context, **sources)
        except TemplateRenderError as exc:
            if exc.field not in sources or exc.field in errors:
                raise  # an empty part cannot fail; retrying would loop forever
            errors[exc.field] = exc.message
            sources[exc.field] = ""
        else:
            break
    return TemplatePreview(
        subject=None if "subject" in errors else content.subject,
        html=None if "html" in errors else content.html,
        text=None if "text" in errors else content.text,
        errors=errors,
        warnings=warnings,
    )
