"""The schedules app."""

from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    """Recurring sends: cron schedules of a topic or a fixed list, and subscriber frequencies."""

    name = "schedules"
    verbose_name = "Recurring sends"
    default_auto_field = "django.db.models.BigAutoField"
