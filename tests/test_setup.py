"""Project-level checks: migrations are complete, system checks pass, `make run` works."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_migrations_are_complete():
    """A model change without its migration fails the suite."""
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


def test_system_checks_pass():
    """The test settings (a provider configured, DEBUG off) pass Django's checks."""
    call_command("check", stdout=StringIO())


def test_make_run_sqlite_setup_accepts_and_sends_email(tmp_path, settings):
    """`make run`'s stack (SQLite, DEBUG, capture inbox): two API requests with one key are
    accepted (the raw SQL paths have SQLite twins), and a burst worker sends both."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "REDIS_URL": settings.REDIS_URL,
        "DEBUG": "1",
        "EMAIL_PROVIDERS": "capture",
        "LOG_LEVEL": "WARNING",
    }
    script = """
import json
from django.test import Client
from mailqueue.models import EmailJob
from mailqueue.services import api_key_create
import django_rq

key = api_key_create(client_name="dev", scopes=["send", "read"]).plaintext
client = Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="localhost")
for number in range(2):
    body = {"to": [f"dev{number}@example.com"], "subject": "Hi", "text": "Hello"}
    response = client.post("/api/v1/emails/", json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content[:500]
django_rq.get_worker("high", "default", "low").work(burst=True)
print(sorted(EmailJob.objects.values_list("status", flat=True)))
"""
    manage = [sys.executable, str(Path(__file__).resolve().parent.parent / "manage.py")]
    subprocess.run([*manage, "migrate", "--no-input"], env=env, check=True, capture_output=True)
    done = subprocess.run(
        [*manage, "shell", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['sent', 'sent']"


def test_production_without_a_public_url_is_warned(settings):
    """W002: with DEBUG off and no MAILQUEUE_PUBLIC_URL, links in emails would point at
    localhost; with it set, no warning."""
    from mailqueue.checks import check_public_url

    settings.DEBUG = False
    if hasattr(settings, "MAILQUEUE_PUBLIC_URL"):
        del settings.MAILQUEUE_PUBLIC_URL
    assert [message.id for message in check_public_url()] == ["mailqueue.W002"]

    settings.MAILQUEUE_PUBLIC_URL = "https://mail.example.com"
    assert check_public_url() == []
