"""App config for delivery and engagement events."""

from django.apps import AppConfig


class TrackingConfig(AppConfig):
    """Delivery events (sent, deferred, failed; later delivered, opened, clicked, bounced)."""

    name = "tracking"
    verbose_name = "Tracking"
    default_auto_field = "django.db.models.BigAutoField"
