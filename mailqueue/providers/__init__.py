"""Provider registry: names from EMAIL_PROVIDERS to one long-lived instance per send thread."""

import threading

from mailqueue import conf
from mailqueue.errors import ProviderConfigurationError
from mailqueue.providers.anymail_esp import AnymailProvider, is_anymail_esp
from mailqueue.providers.base import BackendProvider, Provider
from mailqueue.providers.breaker import CircuitState, Permit, breakers
from mailqueue.providers.capture import CaptureProvider
from mailqueue.providers.console import ConsoleProvider
from mailqueue.providers.simulator import SimulatorProvider
from mailqueue.providers.smtp import SmtpProvider

__all__ = [
    "BackendProvider",
    "CircuitState",
    "Permit",
    "Provider",
    "close_all",
    "configured_providers",
    "get_provider",
    "provider_call_permit",
    "provider_class",
    "provider_report_failure",
    "provider_report_refusal",
    "provider_report_success",
    "providers_circuits",
    "providers_in_service",
    "providers_wait_seconds",
]

# Built-in providers; any other name is looked up among anymail's ESP backends.
PROVIDER_CLASSES: dict[str, type[Provider]] = {
    "smtp": SmtpProvider,
    "capture": CaptureProvider,
    "console": ConsoleProvider,
    # Where test keys' emails go (see mailqueue/providers/simulator.py).
    "simulator": SimulatorProvider,
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
    """The providers whose circuit lets a call through (no Redis call but a refresh at most
    once a second), in their configured order."""
    usable = set(breakers.in_service([provider.name for provider in providers]))
    return [provider for provider in providers if provider.name in usable]


def providers_wait_seconds(providers: list[Provider]) -> float:
    """Seconds until the first of these providers may be called again (0 if one may now)."""
    return breakers.wait_seconds([provider.name for provider in providers])


def provider_call_permit(name: str) -> Permit | None:
    """Leave to call a provider once (a plain call, or its circuit's half-open probe), or None
    while its circuit is open or another worker is probing it."""
    return breakers.permit(name)


def provider_report_success(name: str, permit: Permit) -> None:
    """The provider took a message: free for a plain call; a probe closes the circuit."""
    breakers.record_success(name, permit)


def provider_report_failure(name: str, permit: Permit) -> None:
    """The provider failed (an outage or an unclassified error): counted by its circuit breaker,
    which may open."""
    breakers.record_failure(name, permit)


def provider_report_refusal(name: str, permit: Permit) -> None:
    """The provider refused or deferred one message: not counted; a probe lets the next email
    probe."""
    breakers.record_refusal(name, permit)


def providers_circuits(*, names: list[str]) -> dict[str, CircuitState]:
    """Each provider's circuit, read from Redis now (raises RedisError)."""
    return breakers.states(names)


def close_all() -> None:
    """Close every thread's provider connections and forget this process's copy of the circuits
    (worker shutdown, tests)."""
    global _generation
    with _registry_lock:
        instances = list(_all_instances)
        _all_instances.clear()
        _generation += 1
    for provider in instances:
        provider.close()
    breakers.forget_local()
