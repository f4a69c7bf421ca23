"""System check: refuse to start with an unusable MAILQUEUE_OTP_* option."""

from django.core.checks import CheckMessage, Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

from otp import conf

OPTIONS = (
    conf.resend_seconds,
    conf.max_codes_per_hour,
    conf.max_attempts,
    conf.default_template,
    conf.keep_hours,
)


@register(Tags.compatibility)
def check_otp_options(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """E001: an option of `otp.conf` has a value that cannot be used."""
    errors = []
    for option in OPTIONS:
        try:
            option()
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), id="otp.E001"))
    return errors
