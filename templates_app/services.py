"""Writes and checks for stored templates."""

from django.db import transaction

from mailqueue.errors import ValidationFailed
from templates_app.models import EmailTemplate
from templates_app.rendering import RenderedContent, compile_part, render_content

TEMPLATE_FIELDS = ("name", "subject", "html", "text", "variables", "sample_context", "is_active")


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


@transaction.atomic
def template_create(*, slug: str, **fields) -> EmailTemplate:
    """Create a template after checking that every part compiles."""
    if EmailTemplate.objects.filter(slug=slug).exists():
        raise ValidationFailed(f"A template with slug '{slug}' already exists.", field="slug")
    template = EmailTemplate(slug=slug, **{k: v for k, v in fields.items() if k in TEMPLATE_FIELDS})
    template_validate_sources(subject=template.subject, html=template.html, text=template.text)
    template.save()
    return template


@transaction.atomic
def template_update(*, template: EmailTemplate, **fields) -> EmailTemplate:
    """Update a template's fields after checking that every part compiles."""
    for key, value in fields.items():
        if key in TEMPLATE_FIELDS:
            setattr(template, key, value)
    template_validate_sources(subject=template.subject, html=template.html, text=template.text)
    template.save()
    return template


def template_delete(*, template: EmailTemplate) -> None:
    """Delete a template never used by an email, or deactivate one that was (history stays)."""
    if template.emails.exists() or template.batches.exists():
        template.is_active = False
        template.save(update_fields=["is_active", "updated_at"])
    else:
        template.delete()
