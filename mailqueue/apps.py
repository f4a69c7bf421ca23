"""App config for the core email pipeline."""

from django.apps import AppConfig


class MailqueueConfig(AppConfig):
    """Email jobs, API, queues, worker and providers."""

    name = "mailqueue"
    verbose_name = "Mailqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register system checks."""
        from mailqueue import checks  # noqa: F401
