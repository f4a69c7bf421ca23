"""Provider registry: names from EMAIL_PROVIDERS to one long-lived instance per send thread."""

import threading

from mailqueue import conf
from mailqueue.errors import ProviderConfigurationError
from mailqueue.providers.anymail_esp import AnymailProvider, is_anymail_esp
from mailqueue.providers.base import BackendProvider, Provider
from mailqueue.providers.capture import CaptureProvider
from mailqueue.providers.console import ConsoleProvider
from mailqueue.providers.cooldown import (
    cooldowns_forget_local,
    provider_report_outage,
    provider_report_success,
)
from mailqueue.providers.cooldown import providers_cooldown_remaining as _cooldown_remaining
from mailqueue.providers.cooldown import providers_in_service as _names_in_service
from mailqueue.providers.smtp import SmtpProvider

__all__ = [
    "BackendProvider",
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

# Built-in providers; any other name is looked up among anymail's ESP backends.
PROVIDER_CLASSES: dict[str, type[Provider]] = {
    "smtp": SmtpProvider,
    "capture": CaptureProvider,
    "console": ConsoleProvider,
}

# Each send thread has its own instances (an SMTP session serves one message at a time); every
# instance is also listed here so that close_all() reaches those of every thread.
_local = threading.local()
_all_instances: list[Provider] = []
_registry_lock = threading.Lock()
# Bumped by close_all(): a thread's instances from before it are dropped on its next lookup.
_generation = 0


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
    """This thread's instance of a provider (its connection is reused across emails)."""
    instances = getattr(_local, "instances", None)
    if instances is None or _local.generation != _generation:
        instances = _local.instances = {}
        _local.generation = _generation
    provider = instances.get(name)
    if provider is None:
        provider = provider_class(name)(name)
        instances[name] = provider
        with _registry_lock:
            _all_instances.append(provider)
    return provider


def configured_providers() -> list[Provider]:
    """Providers in EMAIL_PROVIDERS order."""
    names = conf.providers()
    if not names:
        raise ProviderConfigurationError(
            "No email provider is configured: set EMAIL_PROVIDERS (e.g. smtp or amazon_ses)."
        )
    return [get_provider(name) for name in names]


def providers_in_service(providers: list[Provider]) -> list[Provider]:
    """The providers not cooling down after an outage, in their configured order."""
    usable = set(_names_in_service([provider.name for provider in providers]))
    return [provider for provider in providers if provider.name in usable]


def providers_cooldown_remaining(providers: list[Provider]) -> float:
    """Seconds until the first of these providers ends its cooldown (0 if one is in service)."""
    return _cooldown_remaining([provider.name for provider in providers])


def close_all() -> None:
    """Close every thread's provider connections and forget this process's copy of the outages
    (worker shutdown, tests)."""
    global _generation
    with _registry_lock:
        instances = list(_all_instances)
        _all_instances.clear()
        _generation += 1
    for provider in instances:
        provider.close()
    cooldowns_forget_local()
