"""config/settings.py maps the environment onto settings; the defaults stay in mailqueue/conf.py."""

import re
import runpy
from pathlib import Path

import environ
import pytest

from mailqueue.checks import option_functions
from mailqueue.models import Priority

ROOT = Path(__file__).resolve().parent.parent
# Variables whose line in .env.example shows an example rather than the default.
EXAMPLE_ONLY = {"EMAIL_PROVIDERS", "MAILQUEUE_RELEASE_PROVIDERS"}


@pytest.fixture
def load_settings(monkeypatch):
    """Evaluate config/settings.py afresh with only the given variables in the environment."""

    def load(**variables: str) -> dict:
        for name in list(environ.Env.ENVIRON):
            if name.startswith(("MAILQUEUE_", "EMAIL_", "ANYMAIL_")):
                monkeypatch.delenv(name)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        # A developer's .env must not leak into the test.
        monkeypatch.setattr(environ.Env, "read_env", lambda *args, **kwargs: None)
        return runpy.run_path(str(ROOT / "config" / "settings.py"))

    return load


def mailqueue_settings(namespace: dict) -> dict:
    """The settings Mailqueue's options are read from."""
    return {
        name: value
        for name, value in namespace.items()
        if name.startswith("MAILQUEUE_") or name == "EMAIL_PROVIDERS"
    }


def documented_defaults() -> dict[str, str]:
    """`# NAME=value` lines of .env.example for Mailqueue's own options."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    found = (re.match(r"# ((?:MAILQUEUE|EMAIL)_[A-Z_]+)=(\S*)", line) for line in lines)
    return {match[1]: match[2] for match in found if match and match[1] not in EXAMPLE_ONLY}


def test_unset_variables_leave_the_defaults_to_conf(load_settings):
    """With no variable set, settings.py sets none of Mailqueue's options."""
    assert mailqueue_settings(load_settings()) == {}


def test_each_variable_reaches_its_setting(load_settings):
    """A variable sets the setting of the same name; EMAIL_URL and EMAIL_TIMEOUT the smtp ones."""
    namespace = load_settings(
        EMAIL_PROVIDERS="smtp,capture",
        MAILQUEUE_MAX_ATTEMPTS="7",
        MAILQUEUE_RETRY_BASE_SECONDS="1.5",
        MAILQUEUE_ALLOWED_HEADERS="List-Id,References",
        MAILQUEUE_ALLOW_X_HEADERS="0",
        EMAIL_URL="smtp+tls://user:pw@smtp.example.com:587",
        EMAIL_TIMEOUT="12",
    )

    assert namespace["EMAIL_PROVIDERS"] == ["smtp", "capture"]
    assert namespace["MAILQUEUE_MAX_ATTEMPTS"] == 7
    assert namespace["MAILQUEUE_RETRY_BASE_SECONDS"] == 1.5
    assert namespace["MAILQUEUE_ALLOWED_HEADERS"] == ["List-Id", "References"]
    assert namespace["MAILQUEUE_ALLOW_X_HEADERS"] is False
    assert namespace["MAILQUEUE_SMTP"]["EMAIL_HOST"] == "smtp.example.com"
    assert namespace["MAILQUEUE_SMTP"]["EMAIL_PORT"] == 587
    assert namespace["MAILQUEUE_SMTP"]["EMAIL_USE_TLS"] is True
    assert namespace["MAILQUEUE_SMTP_TIMEOUT"] == 12.0


def test_a_malformed_variable_stops_the_process_at_startup(load_settings):
    """MAILQUEUE_MAX_ATTEMPTS=five fails when the settings load, not at the first email."""
    with pytest.raises(ValueError, match="five"):
        load_settings(MAILQUEUE_MAX_ATTEMPTS="five")


def test_env_example_shows_the_defaults(load_settings, settings):
    """Setting every variable to the value .env.example shows changes no option."""
    documented = documented_defaults()
    assert {"MAILQUEUE_MAX_ATTEMPTS", "EMAIL_URL", "EMAIL_TIMEOUT"} <= documented.keys()
    for name in mailqueue_settings(vars(settings._wrapped)):
        delattr(settings, name)
    defaults = {option.__name__: option() for option in option_functions()}

    for name, value in mailqueue_settings(load_settings(**documented)).items():
        setattr(settings, name, value)

    assert {option.__name__: option() for option in option_functions()} == defaults


def test_rq_queues_are_the_priorities_highest_first(load_settings):
    """One RQ queue per priority, in the order workers drain them (the documented worker
    command is `rqworker high default low`), then the outbound webhooks' queue, which the worker
    class serves right after `high`."""
    queues = list(load_settings()["RQ_QUEUES"])
    assert queues == [*Priority.values, "webhooks"] == ["high", "default", "low", "webhooks"]
