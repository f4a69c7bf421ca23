"""App config for stored email templates."""

from django.apps import AppConfig


class TemplatesAppConfig(AppConfig):
    """Stored email templates and their rendering."""

    name = "templates_app"
    verbose_name = "Email templates"
    default_auto_field = "django.db.models.BigAutoField"
