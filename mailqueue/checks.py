"""System checks: refuse to run in production without a working provider configuration."""

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from mailqueue import conf


@register(Tags.compatibility)
def check_providers(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """E001: no provider (DEBUG off); E002: unknown provider; W001: capture-only in production."""
    from mailqueue.errors import ProviderConfigurationError
    from mailqueue.providers import provider_class

    names = conf.providers()
    errors = []
    if not names and not settings.DEBUG:
        errors.append(
            Error(
                "No email provider is configured.",
                hint="Set EMAIL_PROVIDERS to an ordered, comma-separated list such as "
                "'smtp' or 'amazon_ses,smtp' (with EMAIL_URL / ANYMAIL_* settings).",
                id="mailqueue.E001",
            )
        )
    for name in names:
        try:
            provider_class(name)
        except ProviderConfigurationError as exc:
            errors.append(Error(str(exc), id="mailqueue.E002"))
    if not settings.DEBUG and names and set(names) <= {"capture", "console"}:
        errors.append(
            Warning(
                "EMAIL_PROVIDERS has only capture/console: no email leaves this server.",
                id="mailqueue.W001",
            )
        )
    return errors
