"""The event_sends app."""

from django.apps import AppConfig


class EventSendsConfig(AppConfig):
    """Rules that turn events read from a Redis Stream into emails, and the events handled."""

    name = "event_sends"
    verbose_name = "Event-driven sends"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the system check of the MAILQUEUE_EVENTS_* options."""
        from event_sends import checks  # noqa: F401
