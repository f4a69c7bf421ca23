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
    # Open and click tracking for emails from this template; null: MAILQUEUE_TRACK_* decide.
    track_opens = models.BooleanField(null=True, blank=True)
    track_clicks = models.BooleanField(null=True, blank=True)
    # Number of the current EmailTemplateVersion (0 before the first save).
    version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "email_templates"
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class EmailTemplateVersion(models.Model):
    """An immutable snapshot of a template's content; every content change adds one."""

    template = models.ForeignKey(EmailTemplate, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    subject = models.CharField(max_length=998)
    html = models.TextField(blank=True, default="")
    text = models.TextField(blank=True, default="")
    variables = models.JSONField(default=list, blank=True)
    sample_context = models.JSONField(default=dict, blank=True)
    # Who made it: "admin user alice", "API key mq_1a2b3c4d_… (acme)", "load_default_templates".
    created_by = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "email_template_versions"
        ordering = ["template", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="template_version_number")
        ]

    def __str__(self) -> str:
        return f"{self.template.slug} v{self.number}"
