"""Production Redis setups: TLS with a password (rediss://) and Redis Sentinel with failover.

Each scenario starts its own private servers (chaos/tls.py, chaos/sentinel.py) and runs the
real `rqworker` and `rqscheduler` commands against them, while this process accepts the emails
and reads health and metrics through the same configuration.
"""

import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.test import Client as HttpClient
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from chaos.sentinel import sentinel_group
from chaos.tls import tls_redis
from mailqueue.metrics.counters import PROCESSED
from mailqueue.models import EmailJob, EmailStatus
from mailqueue.priorities import QUEUE_NAMES, WEBHOOKS
from mailqueue.redis_config import (
    RedisConfigError,
    redact_url,
    rq_connection_config,
    sentinel_addresses,
)
from mailqueue.scheduling import connection as redis_connection
from mailqueue.services import email_create
from tests.live import PROJECT_DIR, live_env, process_logs, processes, wait_until

PASSWORD = "s3cret-Pa55"
SENTINEL_PASSWORD = "sentinel-Pa55"
ACL_PASSWORD = "acl-Pa55"


def rq_queues(connection: dict) -> dict:
    """RQ_QUEUES as config/settings.py builds it around one connection entry."""
    return {name: {**connection, "DEFAULT_TIMEOUT": 600} for name in (*QUEUE_NAMES, WEBHOOKS)}


def accept(client, count: int, *, prefix: str, **fields) -> list[EmailJob]:
    """Accept emails the way the API does; their jobs reach Redis when each commits."""
    return [
        email_create(
            client=client, to=[f"{prefix}{n}@example.com"], subject="Hi", text="Hello", **fields
        )
        for n in range(count)
    ]


def sent_count(emails: list[EmailJob]) -> int:
    """How many of these emails are sent."""
    return EmailJob.objects.filter(pk__in=[e.pk for e in emails], status=EmailStatus.SENT).count()


def scrape() -> dict[tuple[str, tuple], float]:
    """Every sample of a real `GET /metrics`: (sample name, sorted labels) -> value."""
    response = HttpClient().get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def no_password_in_logs(log_dir: Path, *passwords: str) -> None:
    """No process wrote a password, whatever went wrong."""
    logs = process_logs(log_dir)
    for password in passwords:
        assert password not in logs


class Supervisor:
    """Starts `manage.py` commands and starts again any that exits, as the deployment's
    `restart: unless-stopped` does: an RQ worker quits when Redis vanishes in the middle of a
    job (RQ's loop ends on an unexpected error), and is meant to be restarted."""

    def __init__(self, stack: ExitStack, env: dict[str, str], log_dir: Path) -> None:
        self.stack, self.env, self.log_dir = stack, env, log_dir
        self.running: list[tuple[list[str], subprocess.Popen]] = []
        self.restarts = 0

    def start(self, command: list[str]) -> None:
        """Start one command, its output in a directory of its own."""
        directory = self.log_dir / f"run-{self.restarts}-{len(self.running)}"
        directory.mkdir()
        [process] = self.stack.enter_context(processes([command], self.env, directory))
        self.running.append((command, process))

    def restart_exited(self) -> None:
        """Start again every command whose process has exited."""
        for command, process in list(self.running):
            if process.poll() is not None:
                self.running.remove((command, process))
                self.restarts += 1
                self.start(command)

    def logs(self) -> str:
        """Everything every run printed."""
        return "\n".join(process_logs(d) for d in sorted(self.log_dir.glob("run-*")))

    def wait_until(self, condition, *, what: str, timeout: float = 30) -> None:
        """Poll the condition, restarting exited processes meanwhile; fail with the logs."""
        deadline = time.monotonic() + timeout
        while not condition():
            self.restart_exited()
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")
            time.sleep(0.05)


def test_sentinel_entry_takes_db_user_password_and_tls_from_redis_url():
    """With sentinels, REDIS_URL's host is not used but its DB, ACL user, password and TLS
    options are, for the master and (TLS) the sentinels; the sentinels' password is their own."""
    config = rq_connection_config(
        "rediss://mailer:p%40ss@ignored:1/4?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
        sentinels=sentinel_addresses("10.0.0.5:26379, [fd00::6]:26380"),
        service="mailqueue",
        sentinel_password=SENTINEL_PASSWORD,
    )

    assert config["SENTINELS"] == [("10.0.0.5", 26379), ("fd00::6", 26380)]
    assert config["MASTER_NAME"] == "mailqueue"
    assert "URL" not in config
    master = config["CONNECTION_KWARGS"]
    assert (master["db"], master["username"], master["password"]) == (4, "mailer", "p@ss")
    assert master["ssl"] is True and master["ssl_ca_certs"] == "/etc/ca.pem"
    assert config["SENTINEL_KWARGS"]["password"] == SENTINEL_PASSWORD
    assert config["SENTINEL_KWARGS"]["ssl_ca_certs"] == "/etc/ca.pem"


def test_malformed_settings_are_refused_without_showing_the_password():
    """A bad REDIS_SENTINELS names the variable; a bad REDIS_URL is shown redacted."""
    with pytest.raises(ImproperlyConfigured, match=r"REDIS_SENTINELS: '10\.0\.0\.5'"):
        sentinel_addresses("10.0.0.5")
    with pytest.raises(RedisConfigError) as refused:
        rq_connection_config("http://:hunter2@h/0", sentinels=[("h", 26379)])
    assert "hunter2" not in str(refused.value)
    assert redact_url("redis://mailer:hunter2@h:6379/0") == "redis://mailer:***@h:6379/0"
    assert (
        redact_url("rediss://:hunter2@h/0?ssl_ca_certs=/ca") == "rediss://:***@h/0?ssl_ca_certs=/ca"
    )


def test_every_process_refuses_to_start_with_malformed_sentinels():
    """`manage.py check` stops on REDIS_SENTINELS without a port, saying which variable."""
    env = {
        **live_env(),
        "REDIS_SENTINELS": "10.0.0.5",
        "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:1/0",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "REDIS_SENTINELS: '10.0.0.5' is not host:port" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.django_db(transaction=True)
def test_tls_and_password_reach_queues_scheduler_metrics_and_health(
    issued_key, smtp_sink, settings, client, admin_client, tmp_path
):
    """Against a TLS-only Redis that wants a password: emails accepted here (as the default
    user, `rediss://:password@`) are delivered by a real worker and a scheduled one released by
    the real scheduler (as an ACL user, `rediss://user:password@`), the workers' counters show
    in /metrics and /health/ is healthy; with a wrong password /health/ says so, without it."""
    with tls_redis(password=PASSWORD, acl_user=("mailer", ACL_PASSWORD)) as redis_server:
        settings.RQ_QUEUES = rq_queues(rq_connection_config(redis_server.url))
        env = live_env(
            REDIS_URL=redis_server.url_with(ACL_PASSWORD, user="mailer"),
            EMAIL_PROVIDERS="smtp",
            EMAIL_URL=f"smtp://{smtp_sink.host}:{smtp_sink.port}",
        )
        worker = ["rqworker", "high", "default", "low"]
        with processes([worker, ["rqscheduler"]], env, tmp_path):
            now = accept(issued_key.api_key.client, 10, prefix="now")
            later = accept(
                issued_key.api_key.client,
                1,
                prefix="later",
                send_at=timezone.now() + timedelta(seconds=2),
            )
            assert later[0].status == EmailStatus.SCHEDULED
            wait_until(
                lambda: sent_count(now + later) == 11, timeout=30, what="11 sent", logs=tmp_path
            )
            assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(
                [f"now{n}@example.com" for n in range(10)] + ["later0@example.com"]
            )
            later[0].refresh_from_db()
            assert later[0].sent_at >= later[0].send_at

            samples = scrape()
            sent = (PROCESSED.name, (("provider", "smtp"), ("status", "sent")))
            assert samples[sent] == 11
            health = admin_client.get("/health/").json()
            assert (health["status"], health["queue"], health["checks"]["redis"]) == (
                "healthy",
                "connected",
                "ok",
            ), health
            assert health["checks"]["workers"] == 1
            # A container health check run next to the worker finds it through TLS too.
            probe = subprocess.run(
                [sys.executable, "manage.py", "mailqueue_healthcheck", "worker"],
                cwd=PROJECT_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert probe.returncode == 0, probe.stderr
            # The worker and the scheduler are connected as the ACL user, this process as default.
            users = [c["user"] for c in redis_connection().client_list()]
            assert users.count("mailer") >= 2, users
            assert "default" in users

        # Nothing travelled in clear text: the server's port does not speak plain Redis.
        plain = redis.Redis("127.0.0.1", redis_server.port, password=PASSWORD, socket_timeout=2)
        with pytest.raises(redis.ConnectionError):
            plain.ping()
        wrong = "not-" + PASSWORD
        settings.RQ_QUEUES = rq_queues(rq_connection_config(redis_server.url_with(wrong)))
        for answer in (client.get("/health/"), admin_client.get("/health/")):
            body = answer.json()
            assert answer.status_code == 200
            assert body["status"] == "degraded"
            assert body["queue"] == "AuthenticationError"
            assert body["checks"]["redis"].startswith("error: AuthenticationError")
            assert wrong not in answer.content.decode()
            assert PASSWORD not in answer.content.decode()
        detailed = admin_client.get("/health/").json()["checks"]["redis"]
        assert "invalid username-password pair" in detailed
    no_password_in_logs(tmp_path, PASSWORD, ACL_PASSWORD)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tls", [False, True], ids=["password", "tls-and-password"])
def test_worker_delivers_through_sentinel_and_follows_the_new_master_after_a_crash(
    tls, issued_key, smtp_sink, settings, tmp_path
):
    """Worker, scheduler and this process find the master through a password-protected
    sentinel (with TLS everywhere, or none); when the master dies and the sentinel promotes the
    replica, new connections go to the new master and delivery goes on: every email sent,
    each exactly once."""
    with sentinel_group(
        service="mailqueue-test", password=PASSWORD, sentinel_password=SENTINEL_PASSWORD, tls=tls
    ) as group:
        # The URL's host and port are placeholders: the sentinel names the master.
        url = f"redis://:{PASSWORD}@sentinel-managed:1/2"
        if tls:
            url = f"rediss://:{PASSWORD}@sentinel-managed:1/2?ssl_ca_certs={group.certificates.ca}"
        sentinels = f"127.0.0.1:{group.sentinel.port}"
        settings.RQ_QUEUES = rq_queues(
            rq_connection_config(
                url,
                sentinels=sentinel_addresses(sentinels),
                service="mailqueue-test",
                sentinel_password=SENTINEL_PASSWORD,
            )
        )
        env = live_env(
            REDIS_URL=url,
            REDIS_SENTINELS=sentinels,
            REDIS_SENTINEL_SERVICE="mailqueue-test",
            REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD,
            EMAIL_PROVIDERS="smtp",
            EMAIL_URL=f"smtp://{smtp_sink.host}:{smtp_sink.port}",
            # A job lost with the old master is put back by the sweeper within a second.
            MAILQUEUE_SWEEP_INTERVAL_SECONDS="1",
        )
        with ExitStack() as stack:
            supervisor = Supervisor(stack, env, tmp_path)
            supervisor.start(["rqworker", "high", "default", "low"])
            supervisor.start(["rqscheduler"])
            before = accept(issued_key.api_key.client, 10, prefix="before")
            supervisor.wait_until(lambda: sent_count(before) == 10, what="10 sent")
            old_master = group.master
            assert redis_connection().connection_pool.get_master_address()[1] == old_master.port
            assert group.role(old_master) == "master"

            new_master = group.master_kill()

            after = accept(issued_key.api_key.client, 10, prefix="after")
            supervisor.wait_until(lambda: sent_count(after) == 10, what="10 more")
            # This process's client follows the sentinel to the promoted replica.
            assert redis_connection().ping()
            assert redis_connection().connection_pool.get_master_address()[1] == new_master.port
            assert new_master.port != old_master.port
            # The worker is registered in DB 2 (REDIS_URL's) of the new master.
            assert group.client(new_master, db=2).smembers("rq:workers")
            logs = supervisor.logs()

    recipients = [m.rcpt_tos[0] for m in smtp_sink.messages]
    assert len(recipients) == len(set(recipients)) == 20, logs
    assert PASSWORD not in logs and SENTINEL_PASSWORD not in logs
