"""App configs: the core email pipeline, and the admin with Mailqueue's own site."""

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class MailqueueConfig(AppConfig):
    """Email jobs, API, queues, worker and providers."""

    name = "mailqueue"
    verbose_name = "Mailqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register system checks; start the health probe's uptime clock."""
        from mailqueue import checks, health  # noqa: F401


class MailqueueAdminConfig(admin_apps.AdminConfig):
    """`django.contrib.admin` with `MailqueueAdminSite` as `admin.site` (Django's documented way to
    replace the default site); listed in INSTALLED_APPS instead of "django.contrib.admin"."""

    # Not a candidate when Django picks the config of the "mailqueue" entry: that is
    # MailqueueConfig.
    default = False
    default_site = "mailqueue.admin_site.MailqueueAdminSite"
