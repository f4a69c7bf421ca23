"""Management commands an operator runs: create_api_key and load_default_templates."""

import json
from io import StringIO
from pathlib import Path

import django_rq
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.core.management.base import SystemCheckError
from rest_framework.test import APIClient

from mailqueue.models import ApiKey, CapturedMessage, EmailJob, EmailStatus
from mailqueue.scheduling import connection as redis_connection
from mailqueue.scheduling import get_scheduler
from templates_app.models import EmailTemplate
from tests.helpers import run_worker

FIXTURES = Path(settings.BASE_DIR) / "fixtures" / "templates"
FIXTURE_SLUGS = sorted(json.loads(path.read_text())["slug"] for path in FIXTURES.glob("*.json"))


def run(*args) -> str:
    """Run a management command and return its stdout."""
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def bearer(token: str) -> APIClient:
    """An API client using a key."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


# --- create_api_key --------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_api_key_prints_a_working_key_last():
    """The last stdout line is the key, and it authenticates against the API."""
    output = run("create_api_key", "billing", "--scope", "send", "--scope", "read")

    key = output.strip().splitlines()[-1]
    assert key.startswith("mq_")
    client = bearer(key)
    sent = client.post(
        "/api/v1/emails/", {"to": "a@example.com", "subject": "s", "text": "t"}, format="json"
    )
    assert sent.status_code == 202
    assert client.get("/api/v1/emails/").json()["results"][0]["id"] == sent.json()["id"]
    assert EmailJob.objects.get().client.name == "billing"


@pytest.mark.django_db
def test_create_api_key_defaults_to_send_and_read():
    """Without --scope the key can send and read but not write templates."""
    key = run("create_api_key", "billing").strip().splitlines()[-1]

    assert ApiKey.objects.get().scopes == ["read", "send"]
    created = bearer(key).post(
        "/api/v1/templates/", {"slug": "x", "name": "x", "subject": "s", "text": "t"}, format="json"
    )
    assert created.status_code == 403


@pytest.mark.django_db
def test_create_api_key_never_stores_the_plaintext():
    """Only the prefix and a hash are kept; the printed secret appears nowhere in the database."""
    key = run("create_api_key", "billing", "--name", "ci").strip().splitlines()[-1]

    stored = ApiKey.objects.get()
    assert stored.name == "ci"
    assert key.split("_", 2)[2] not in (stored.key_hash, stored.prefix)
    assert key.startswith(f"mq_{stored.prefix}_")


@pytest.mark.django_db
def test_create_api_key_reuses_an_existing_client():
    """A second key for the same client sees the first key's emails."""
    first = run("create_api_key", "billing").strip().splitlines()[-1]
    second = run("create_api_key", "billing").strip().splitlines()[-1]
    email_id = (
        bearer(first)
        .post(
            "/api/v1/emails/", {"to": "a@example.com", "subject": "s", "text": "t"}, format="json"
        )
        .json()["id"]
    )

    assert bearer(second).get(f"/api/v1/emails/{email_id}/").status_code == 200


@pytest.mark.django_db
def test_create_api_key_refuses_an_unknown_scope():
    """An unknown scope is a command error and no key is created."""
    with pytest.raises(CommandError):
        run("create_api_key", "billing", "--scope", "superuser")

    assert not ApiKey.objects.exists()


# --- load_default_templates ------------------------------------------------------------------


def test_there_are_eleven_default_templates():
    """The shipped fixtures are the eleven documented templates."""
    assert len(FIXTURE_SLUGS) == 11


@pytest.mark.django_db
def test_load_default_templates_creates_all_eleven():
    """All fixtures become active templates; the summary says so."""
    output = run("load_default_templates")

    assert "11 created" in output
    assert sorted(EmailTemplate.objects.values_list("slug", flat=True)) == FIXTURE_SLUGS
    assert EmailTemplate.objects.filter(is_active=True).count() == 11


@pytest.mark.django_db
def test_load_default_templates_is_idempotent_and_keeps_local_edits():
    """A second run creates nothing and does not overwrite a template edited since."""
    run("load_default_templates")
    EmailTemplate.objects.filter(slug="welcome").update(name="Our welcome")

    output = run("load_default_templates")

    assert "0 created, 0 updated" in output
    assert EmailTemplate.objects.count() == 11
    assert EmailTemplate.objects.get(slug="welcome").name == "Our welcome"


@pytest.mark.django_db
def test_load_default_templates_update_overwrites():
    """--update restores the shipped version of existing templates."""
    run("load_default_templates")
    EmailTemplate.objects.filter(slug="welcome").update(name="Our welcome")

    output = run("load_default_templates", "--update")

    assert "0 created, 11 updated" in output
    assert EmailTemplate.objects.get(slug="welcome").name == "Welcome"


@pytest.mark.django_db
def test_load_default_templates_from_an_empty_dir_is_an_error(tmp_path):
    """Pointing --dir at a folder with no templates is a command error."""
    with pytest.raises(CommandError):
        run("load_default_templates", "--dir", str(tmp_path))


@pytest.mark.parametrize("slug", FIXTURE_SLUGS)
def test_every_default_template_renders_with_its_sample_context(api, slug):
    """Each shipped template previews cleanly with its sample_context: no missing variables."""
    run("load_default_templates")
    template = EmailTemplate.objects.get(slug=slug)
    assert set(template.variables) <= set(template.sample_context)

    response = api.post(
        f"/api/v1/templates/{slug}/render/",
        {"context": template.sample_context},
        format="json",
    )

    assert response.status_code == 200, response.content
    rendered = response.json()
    assert rendered["subject"]
    assert rendered["html"] or rendered["text"]
    for part in rendered.values():
        assert "{{" not in part
        assert "{%" not in part


@pytest.mark.parametrize("slug", FIXTURE_SLUGS)
def test_every_default_template_is_delivered(api, slug, django_capture_on_commit_callbacks):
    """Each shipped template, sent with its sample context, is delivered by a worker."""
    run("load_default_templates")
    context = EmailTemplate.objects.get(slug=slug).sample_context
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/emails/",
            {"to": "ada@example.com", "template": slug, "context": context},
            format="json",
        )
    assert response.status_code == 202

    run_worker()

    email = EmailJob.objects.get(pk=response.json()["id"])
    assert email.status == EmailStatus.SENT, email.last_error
    # The captured subject is the MIME header, which folds long subjects over lines.
    assert " ".join(CapturedMessage.objects.get().subject.split()) == email.subject


@pytest.mark.django_db
def test_healthcheck_sees_a_live_worker_on_this_host_and_not_a_killed_one():
    """The container health check passes while a worker here is alive, fails once it is gone."""
    worker = django_rq.get_worker("default")
    worker.register_birth()
    out = StringIO()
    call_command("mailqueue_healthcheck", "worker", stdout=out)
    assert "healthy: 1 live worker" in out.getvalue()

    redis_connection().delete(worker.key)  # killed -9: its heartbeat key expired

    with pytest.raises(SystemExit) as exit_info:
        call_command("mailqueue_healthcheck", "worker", stderr=StringIO())
    assert exit_info.value.code == 1


def test_healthcheck_fails_without_a_scheduler_and_passes_with_one():
    """No `rqscheduler` heartbeat: unhealthy; once one registers: healthy."""
    with pytest.raises(SystemExit):
        call_command("mailqueue_healthcheck", "scheduler", stderr=StringIO())

    get_scheduler().register_birth()
    out = StringIO()
    call_command("mailqueue_healthcheck", "scheduler", stdout=out)
    assert "healthy: 1 live scheduler" in out.getvalue()


def test_scheduler_registers_again_after_a_redis_flush():
    """A flush wipes the scheduler's key; its next heartbeat puts it back (health stays true)."""
    scheduler = get_scheduler()
    scheduler.register_birth()
    redis_connection().flushdb()
    with pytest.raises(SystemExit):
        call_command("mailqueue_healthcheck", "scheduler", stderr=StringIO())

    scheduler.heartbeat()

    out = StringIO()
    call_command("mailqueue_healthcheck", "scheduler", stdout=out)
    assert "healthy: 1 live scheduler" in out.getvalue()


def test_scheduler_releases_only_its_own_lock():
    """A scheduler whose lock expired and was taken by another does not delete the new lock."""
    first, second = get_scheduler(), get_scheduler()
    assert first.acquire_lock()
    assert not second.acquire_lock()
    redis_connection().delete(first.scheduler_lock_key)  # the first one's lock expired
    assert second.acquire_lock()

    first.remove_lock()

    assert redis_connection().get(first.scheduler_lock_key) == second.name.encode()
    second.remove_lock()
    assert redis_connection().get(first.scheduler_lock_key) is None


def test_rqworker_refuses_to_start_without_a_provider(settings):
    """The worker still runs Mailqueue's own checks (not the web side's URL checks): with no
    provider and DEBUG off it stops before taking a job."""
    settings.EMAIL_PROVIDERS = []
    settings.DEBUG = False

    with pytest.raises(SystemCheckError, match=r"mailqueue\.E001"):
        call_command("rqworker", "high", "default", "low", "--burst", skip_checks=False)


def test_rqworker_skips_the_url_checks():
    """Loading every view (admin, API schema, webhook signature libraries) is not a worker's job."""
    from django.core.checks import Tags

    from mailqueue.management.commands.rqworker import Command

    assert Tags.urls not in Command.requires_system_checks
    assert Tags.compatibility in Command.requires_system_checks
