"""Shared fixtures: API clients with real keys, a real SMTP server, a real RQ worker."""

import pytest
from rest_framework.test import APIClient

from mailqueue.providers import close_all
from mailqueue.scheduling import connection as redis_connection
from mailqueue.services import api_key_create
from templates_app.services import template_create
from tests import hypothesis_profiles  # noqa: F401  (registers and loads the profile)
from tests.smtp_sink import SmtpSink


@pytest.fixture(autouse=True)
def _fresh_redis_and_providers():
    """Each test starts with an empty Redis DB (this run's own) and no open provider connection."""
    redis_connection().flushdb()
    yield
    close_all()


@pytest.fixture
def issued_key(db):
    """A key of client `acme` with every scope."""
    return api_key_create(client_name="acme", scopes=["send", "read", "templates"])


@pytest.fixture
def api(issued_key) -> APIClient:
    """An API client authenticated as `acme`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued_key.plaintext}")
    return client


@pytest.fixture
def api_for():
    """Factory: an API client for a new key of a client with the given scopes."""

    def make(client_name: str, scopes: list[str]) -> APIClient:
        issued = api_key_create(client_name=client_name, scopes=scopes)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
        return client

    return make


@pytest.fixture
def welcome_template(db):
    """A template that requires `name`."""
    return template_create(
        slug="welcome",
        name="Welcome",
        subject="Welcome, {{ name }}!",
        html="<p>Hello {{ name }}</p>",
        text="Hello {{ name }}",
        variables=["name"],
        sample_context={"name": "Ada"},
    )


@pytest.fixture
def smtp_sink(settings):
    """A real SMTP server (aiosmtpd) on a free port; the `smtp` provider points at it."""
    sink = SmtpSink()
    sink.start()
    settings.EMAIL_PROVIDERS = ["smtp"]
    settings.MAILQUEUE_SMTP = {"EMAIL_HOST": sink.host, "EMAIL_PORT": sink.port}
    settings.MAILQUEUE_SMTP_TIMEOUT = 5
    yield sink
    close_all()
    sink.stop()
