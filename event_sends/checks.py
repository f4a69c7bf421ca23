"""System check: refuse to start with an unusable MAILQUEUE_EVENTS_* option."""

import inspect

from django.core.checks import CheckMessage, Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

from event_sends import conf


@register(Tags.compatibility)
def check_event_options(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """E001: an option of `event_sends.conf` has a value that cannot be used."""
    errors = []
    for name, option in inspect.getmembers(conf, inspect.isfunction):
        if option.__module__ != conf.__name__ or name.startswith("_"):
            continue
        try:
            option()
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), id="event_sends.E001"))
    return errors
