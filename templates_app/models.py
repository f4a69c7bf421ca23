"""Stored email templates."""

from django.db import models


class EmailTemplate(models.Model):
    """A named template: subject, HTML and text bodies in the Django template language."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    subject = models.CharField(max_length=998)
    html = models.TextField(blank=True, default="")
    text = models.TextField(blank=True, default="")
    variables = models.JSONField(
        default=list,
        blank=True,
        help_text="Names of the context variables every send must provide.",
    )
    sample_context = models.JSONField(
        default=dict, blank=True, help_text="Example context used for previews."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "email_templates"
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug
