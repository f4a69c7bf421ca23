"""Fixtures for topics: the client `acme` with a topic of its own content, and helpers."""

import pytest

from tests.helpers import run_worker
from topics.models import Topic
from topics.services import topic_create


@pytest.fixture
def acme(issued_key):
    """The client `acme`, whose key the `api` fixture uses."""
    return issued_key.api_key.client


@pytest.fixture
def news(acme) -> Topic:
    """A topic with its own content that greets `name` (topic context) of `city` (subscriber)."""
    return topic_create(
        client=acme,
        slug="news",
        name="Acme news",
        subject="News for {{ name }}",
        html="<p>Hello {{ name }} from {{ city }}</p>",
        text="Hello {{ name }} from {{ city }}",
        context={"name": "reader", "city": "nowhere"},
    )


@pytest.fixture
def public(settings) -> str:
    """The public base URL links point at."""
    settings.MAILQUEUE_PUBLIC_URL = "https://mail.acme.test"
    return settings.MAILQUEUE_PUBLIC_URL


@pytest.fixture
def work(django_capture_on_commit_callbacks):
    """Run a burst worker; the jobs it enqueues on commit reach Redis as in production."""

    def run() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            run_worker()

    return run


@pytest.fixture
def subscribe(api, django_capture_on_commit_callbacks):
    """POST a subscription through the API (jobs reach Redis on commit); the response."""

    def post(slug: str = "news", **body):
        with django_capture_on_commit_callbacks(execute=True):
            return api.post(f"/api/v1/topics/{slug}/subscribers/", body, format="json")

    return post
