"""Options are read at call time, fall back to their default, and refuse unusable values."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from mailqueue import conf


def test_an_unset_option_has_its_default(settings):
    """Without MAILQUEUE_MAX_ATTEMPTS an email gets 5 attempts."""
    if hasattr(settings, "MAILQUEUE_MAX_ATTEMPTS"):
        del settings.MAILQUEUE_MAX_ATTEMPTS

    assert conf.max_attempts() == 5


def test_providers_default_to_the_capture_inbox_only_while_debugging(settings):
    """No EMAIL_PROVIDERS: capture with DEBUG on, nothing with DEBUG off."""
    del settings.EMAIL_PROVIDERS

    settings.DEBUG = True
    assert conf.providers() == ["capture"]
    settings.DEBUG = False
    assert conf.providers() == []


def test_lists_may_be_comma_separated_strings(settings):
    """EMAIL_PROVIDERS = "smtp, capture" is the list of both, blanks dropped."""
    settings.EMAIL_PROVIDERS = "smtp, capture,"

    assert conf.providers() == ["smtp", "capture"]


def test_release_falls_back_to_the_real_providers(settings):
    """Without MAILQUEUE_RELEASE_PROVIDERS, a release goes to the non-capture providers."""
    settings.EMAIL_PROVIDERS = ["capture", "smtp", "console", "postmark"]
    settings.MAILQUEUE_RELEASE_PROVIDERS = []

    assert conf.release_providers() == ["smtp", "postmark"]


@pytest.mark.parametrize(
    ("name", "value", "option"),
    [
        ("MAILQUEUE_MAX_ATTEMPTS", "five", conf.max_attempts),
        ("MAILQUEUE_WORKER_CONCURRENCY", 0, conf.worker_concurrency),
        ("MAILQUEUE_ALLOW_X_HEADERS", "0", conf.allow_x_headers),
        ("MAILQUEUE_SMTP", "smtp://localhost", conf.smtp_settings),
    ],
)
def test_an_unusable_value_is_a_configuration_error_naming_the_setting(
    settings, name, value, option
):
    """A wrong type or a value out of range raises ImproperlyConfigured with the setting's name."""
    setattr(settings, name, value)

    with pytest.raises(ImproperlyConfigured, match=name):
        option()


def test_manage_check_reports_an_unusable_value(settings):
    """`manage.py check` stops on an unusable option (mailqueue.E003), naming it."""
    settings.MAILQUEUE_BATCH_CHUNK_SIZE = -1

    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check")

    assert "mailqueue.E003" in str(excinfo.value)
    assert "MAILQUEUE_BATCH_CHUNK_SIZE" in str(excinfo.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILQUEUE_TOPICS_CONFIRM_MAX_AGE", 30),
        ("MAILQUEUE_TOPICS_CONFIRM_RESEND_SECONDS", "a minute"),
        ("MAILQUEUE_SCHEDULE_CHUNK_SIZE", 0),
        ("MAILQUEUE_SCHEDULE_EXPAND_SECONDS", "ten"),
    ],
)
def test_manage_check_reports_an_unusable_value_of_an_apps_option(settings, name, value):
    """An app's own option (topics, schedules) stops `manage.py check` too, named once."""
    setattr(settings, name, value)

    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check")

    assert "mailqueue.E003" in str(excinfo.value)
    assert str(excinfo.value).count(name) == 1


def test_message_ids_use_the_default_senders_domain(settings):
    """DEFAULT_FROM_EMAIL = "Billing <billing@acme.test>" gives Message-IDs @acme.test."""
    settings.DEFAULT_FROM_EMAIL = "Billing <billing@acme.test>"

    assert conf.message_id_domain() == "acme.test"
