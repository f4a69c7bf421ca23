"""System checks: refuse to start with an unusable option or provider configuration."""

import inspect
from collections.abc import Callable
from types import ModuleType

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from mailqueue import conf
from schedules import conf as schedules_conf
from templates_app import conf as templates_conf
from topics import conf as topics_conf

# The `conf` modules whose options mailqueue.E003 reads. otp and event_sends are not here: their
# own checks (otp.E001, event_sends.E001) read theirs, and a bad value is reported once.
CONF_MODULES: tuple[ModuleType, ...] = (conf, topics_conf, schedules_conf, templates_conf)


def option_functions() -> list[Callable[[], object]]:
    """Every option function of CONF_MODULES (their own public functions that take no argument)."""
    return [
        function
        for module in CONF_MODULES
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if function.__module__ == module.__name__
        and not name.startswith("_")
        and not inspect.signature(function).parameters
    ]


@register(Tags.compatibility)
def check_options(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """E003: an option's setting has a value Mailqueue or one of its apps cannot use."""
    errors = []
    for option in option_functions():
        try:
            option()
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), id="mailqueue.E003"))
    return errors


@register(Tags.compatibility)
def check_providers(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """E001: no provider (DEBUG off); E002: unknown provider; W001: capture-only in production."""
    from mailqueue.errors import ProviderConfigurationError
    from mailqueue.providers import provider_class

    try:
        names = conf.providers()
    except ImproperlyConfigured:
        return []  # reported by check_options as mailqueue.E003
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
    if not settings.DEBUG and names and set(names) <= {"capture", "console", "simulator"}:
        errors.append(
            Warning(
                "EMAIL_PROVIDERS has only capture/console: no email leaves this server.",
                id="mailqueue.W001",
            )
        )
    return errors


@register(Tags.compatibility)
def check_public_url(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """W002: in production, MAILQUEUE_PUBLIC_URL left at its local default."""
    if settings.DEBUG or hasattr(settings, "MAILQUEUE_PUBLIC_URL"):
        return []
    return [
        Warning(
            "MAILQUEUE_PUBLIC_URL is not set: unsubscribe links and open/click tracking point "
            f"at {conf.public_url()}, which recipients cannot reach.",
            hint="Set MAILQUEUE_PUBLIC_URL to the https URL this service is reached at.",
            id="mailqueue.W002",
        )
    ]
