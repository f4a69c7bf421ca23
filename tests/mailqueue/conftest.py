"""Fixtures for tests that accept emails through the service and run a real worker."""

import pytest

from mailqueue.models import EmailJob
from mailqueue.services import email_create
from tests.helpers import run_worker


@pytest.fixture
def send(issued_key, django_capture_on_commit_callbacks):
    """Accept one email ("Hi"/"Hello" unless told); its job reaches Redis as on a real commit."""

    def make(to: str = "ada@example.com", **fields) -> EmailJob:
        fields = {"subject": "Hi", "text": "Hello", **fields}
        with django_capture_on_commit_callbacks(execute=True):
            return email_create(client=issued_key.api_key.client, to=[to], **fields)

    return make


@pytest.fixture
def work(django_capture_on_commit_callbacks):
    """Run a burst worker; the retry jobs it enqueues on commit reach Redis as in production."""

    def run() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            run_worker()

    return run
