"""Reads of stored templates."""

from django.db.models import Prefetch, QuerySet
from django.http import Http404

from templates_app.models import EmailTemplate, EmailTemplateVersion


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
