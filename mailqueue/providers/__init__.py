"""Provider registry: names from EMAIL_PROVIDERS to one long-lived instance per process."""

import time

from mailqueue import conf
from mailqueue.errors import ProviderConfigurationError
from mailqueue.providers.anymail_esp import AnymailProvider, is_anymail_esp
from mailqueue.providers.base import Provider

__all__ = [
    "Provider",
    "close_all",
    "configured_providers",
    "get_provider",
    "provider_class",
    "provider_report_outage",
    "provider_report_success",
    "providers_cooldown_remaining",
    "providers_in_service",
]
from mailqueue.providers.capture import CaptureProvider
from mailqueue.providers.console import ConsoleProvider
from mailqueue.providers.smtp import SmtpProvider

# Built-in providers; any other name is looked up among anymail's ESP backends.
PROVIDER_CLASSES: dict[str, type[Provider]] = {
    "smtp": SmtpProvider,
    "capture": CaptureProvider,
    "console": ConsoleProvider,
}

_instances: dict[str, Provider] = {}
# Provider name -> monotonic time until which it is skipped after an outage (per process).
_cooling_until: dict[str, float] = {}


def provider_class(name: str) -> type[Provider]:
    """The class serving a provider name, or ProviderConfigurationError if none does."""
    if name in PROVIDER_CLASSES:
        return PROVIDER_CLASSES[name]
    if is_anymail_esp(name):
        return AnymailProvider
    raise ProviderConfigurationError(
        f"Unknown email provider '{name}'. Use smtp, capture, console or an anymail ESP name "
        "such as amazon_ses, sendgrid, postmark, mailgun or resend."
    )


def get_provider(name: str) -> Provider:
    """The process-wide instance of a provider (its connection is reused across emails)."""
    provider = _instances.get(name)
    if provider is None:
        provider = provider_class(name)(name)
        _instances[name] = provider
    return provider


def configured_providers() -> list[Provider]:
    """Providers in EMAIL_PROVIDERS order."""
    names = conf.providers()
    if not names:
        raise ProviderConfigurationError(
            "No email provider is configured: set EMAIL_PROVIDERS (e.g. smtp or amazon_ses)."
        )
    return [get_provider(name) for name in names]


def provider_report_outage(name: str) -> None:
    """Skip this provider for MAILQUEUE_PROVIDER_COOLDOWN_SECONDS: it is unreachable or unusable,
    and every email would otherwise wait for its timeout before failing over."""
    _cooling_until[name] = time.monotonic() + conf.provider_cooldown_seconds()


def provider_report_success(name: str) -> None:
    """The provider works (again)."""
    _cooling_until.pop(name, None)


def providers_in_service(providers: list[Provider]) -> list[Provider]:
    """The providers not cooling down after an outage, in their configured order."""
    now = time.monotonic()
    return [provider for provider in providers if _cooling_until.get(provider.name, 0) <= now]


def providers_cooldown_remaining(providers: list[Provider]) -> float:
    """Seconds until the first of these providers ends its cooldown (0 if one is in service)."""
    now = time.monotonic()
    return max(0.0, min(_cooling_until.get(provider.name, now) for provider in providers) - now)


def close_all() -> None:
    """Close every open provider connection and forget outages (worker shutdown, tests)."""
    for provider in _instances.values():
        provider.close()
    _instances.clear()
    _cooling_until.clear()
