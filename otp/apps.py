"""The otp app."""

from django.apps import AppConfig


class OtpConfig(AppConfig):
    """One-time codes: issued, emailed at `high` priority, verified once, stored only as a hash."""

    name = "otp"
    verbose_name = "One-time codes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the system check of the MAILQUEUE_OTP_* options."""
        from otp import checks  # noqa: F401
