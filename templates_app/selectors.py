"""Reads of stored templates."""

from django.db.models import QuerySet
from django.http import Http404

from templates_app.models import EmailTemplate


def template_list() -> QuerySet[EmailTemplate]:
    """All templates, by slug."""
    return EmailTemplate.objects.order_by("slug")


def template_get(*, slug: str) -> EmailTemplate:
    """One template by slug, or 404."""
    template = EmailTemplate.objects.filter(slug=slug).first()
    if template is None:
        raise Http404(f"No template with slug '{slug}'.")
    return template
