"""The real service for the client's live tests: pytest-django's live server (this test
process, the test database) and one real `rqworker` delivering through the smtp provider to a
real SMTP server, both started once per module."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailqueue.services import api_key_create
from mailqueue.services.sender_domains import sender_domain_register_verified
from tests.live import live_env, processes, wait_until
from tests.smtp_sink import Received, SmtpSink

# Every From and Reply-To of the live tests is in this domain, verified for the test client.
SENDER_DOMAIN = "example.com"


@dataclass
class Service:
    """A running service, an API key of client `acme` (every scope but admin) and the SMTP
    server its worker delivers to."""

    url: str
    key: str
    sink: SmtpSink
    logs: Path

    def delivered(self, count: int, *, timeout: float = 20) -> list[Received]:
        """Wait until the SMTP server has received `count` messages; those messages."""
        wait_until(
            lambda: len(self.sink.messages) >= count,
            timeout=timeout,
            what=f"{count} messages at the SMTP server (got {len(self.sink.messages)})",
            logs=self.logs,
        )
        return list(self.sink.messages)


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[SmtpSink]:
    """One SMTP server for the module's worker."""
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def worker_logs(django_db_setup, smtp_server, tmp_path_factory) -> Iterator[Path]:
    """A real `rqworker` on this test run's database and Redis DB, sending with the smtp
    provider to `smtp_server`; its output lands in the returned folder."""
    logs = tmp_path_factory.mktemp("clients-worker")
    env = live_env(
        EMAIL_PROVIDERS="smtp", EMAIL_URL=f"smtp://{smtp_server.host}:{smtp_server.port}"
    )
    with processes([["rqworker", "high", "default", "low"]], env, logs):
        yield logs


@pytest.fixture
def service(live_server, transactional_db, worker_logs, smtp_server) -> Service:
    """The live service with a fresh key of client `acme`, whose sender domain is verified."""
    smtp_server.messages.clear()
    issued = api_key_create(client_name="acme", scopes=["send", "read", "templates"])
    sender_domain_register_verified(client=issued.api_key.client, domain=SENDER_DOMAIN)
    return Service(url=live_server.url, key=issued.plaintext, sink=smtp_server, logs=worker_logs)
