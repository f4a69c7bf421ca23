"""Template versions: every content change is a new immutable version; emails keep theirs."""

import pytest

from mailqueue.models import EmailJob
from templates_app.models import EmailTemplate, EmailTemplateVersion
from templates_app.services import template_restore
from tests.helpers import run_worker

TEMPLATES = "/api/v1/templates/"


def create(api, **overrides):
    body = {
        "slug": "receipt",
        "name": "Receipt",
        "subject": "Receipt {{ number }}",
        "html": "<p>v1 {{ number }}</p>",
        "text": "v1 {{ number }}",
        "variables": ["number"],
    }
    return api.post(TEMPLATES, {**body, **overrides}, format="json")


@pytest.mark.django_db
def test_create_is_version_1_with_its_author(api, issued_key):
    """A new template is version 1, and the API lists who made it."""
    body = create(api).json()

    assert body["version"] == 1
    [version] = body["versions"]
    assert version["number"] == 1
    assert version["created_by"] == f"API key {issued_key.api_key}"


@pytest.mark.django_db
def test_content_change_adds_a_version_but_renaming_does_not(api):
    """Changing html adds version 2; changing only the name or the active flag adds none."""
    create(api)

    changed = api.patch(f"{TEMPLATES}receipt/", {"html": "<p>v2</p>"}, format="json").json()
    renamed = api.patch(f"{TEMPLATES}receipt/", {"name": "Receipt!"}, format="json").json()

    assert changed["version"] == 2
    assert renamed["version"] == 2
    assert [v["number"] for v in renamed["versions"]] == [2, 1]
    old = EmailTemplateVersion.objects.get(template__slug="receipt", number=1)
    assert old.html == "<p>v1 {{ number }}</p>"


@pytest.mark.django_db
def test_email_renders_the_version_it_was_accepted_with(api, django_capture_on_commit_callbacks):
    """An edit after an email was accepted does not change what that email says."""
    create(api)
    with django_capture_on_commit_callbacks(execute=True):
        email_id = api.post(
            "/api/v1/emails/",
            {"to": "ada@example.com", "template": "receipt", "context": {"number": 7}},
            format="json",
        ).json()["id"]
    api.patch(f"{TEMPLATES}receipt/", {"html": "<p>v2 {{ number }}</p>"}, format="json")

    run_worker()

    email = EmailJob.objects.select_related("template_version").get(pk=email_id)
    assert email.template_version.number == 1
    assert email.html == "<p>v1 7</p>"


@pytest.mark.django_db
def test_restore_brings_back_old_content_as_a_new_version(api):
    """Restoring version 1 makes its content current again, recorded as version 3."""
    create(api)
    api.patch(f"{TEMPLATES}receipt/", {"html": "<p>v2</p>"}, format="json")
    template = EmailTemplate.objects.get(slug="receipt")

    template_restore(template=template, number=1, created_by="admin user ada")

    template.refresh_from_db()
    assert template.version == 3
    assert template.html == "<p>v1 {{ number }}</p>"
    latest = EmailTemplateVersion.objects.get(template=template, number=3)
    assert latest.created_by == "admin user ada (restore of v1)"
    assert latest.html == template.html


def send(api, **context):
    """POST a `receipt` email with this context."""
    return api.post(
        "/api/v1/emails/",
        {"to": "ada@example.com", "template": "receipt", "context": context},
        format="json",
    )


@pytest.mark.django_db
def test_an_edit_applies_to_the_very_next_send(api):
    """The send right after an edit uses the new subject and variables and pins the new version."""
    create(api)
    assert send(api, number=7).json()["subject"] == "Receipt 7"

    api.patch(
        f"{TEMPLATES}receipt/",
        {"subject": "Your receipt {{ number }} from {{ shop }}", "variables": ["number", "shop"]},
        format="json",
    )
    refused = send(api, number=8)
    accepted = send(api, number=8, shop="Acme")

    assert refused.status_code == 400
    assert "shop" in refused.json()["context"][0]
    assert accepted.json()["subject"] == "Your receipt 8 from Acme"
    email = EmailJob.objects.select_related("template_version").get(pk=accepted.json()["id"])
    assert email.template_version.number == 2


@pytest.mark.django_db
def test_deactivating_and_reactivating_apply_to_the_very_next_send(api):
    """A deactivated template is refused on the next send, and accepted again once reactivated."""
    create(api)
    assert send(api, number=1).status_code == 202

    api.patch(f"{TEMPLATES}receipt/", {"is_active": False}, format="json")
    refused = send(api, number=2)
    api.patch(f"{TEMPLATES}receipt/", {"is_active": True}, format="json")
    accepted = send(api, number=3)

    assert refused.status_code == 400
    assert "receipt" in refused.json()["template"][0]
    assert accepted.status_code == 202
    assert accepted.json()["subject"] == "Receipt 3"


@pytest.mark.django_db
def test_accepted_email_pins_the_current_version_row(api):
    """The email points at the version row holding the content its subject was rendered from."""
    create(api)
    api.patch(f"{TEMPLATES}receipt/", {"subject": "Receipt no. {{ number }}"}, format="json")

    email_id = send(api, number=9).json()["id"]

    email = EmailJob.objects.select_related("template_version").get(pk=email_id)
    current = EmailTemplateVersion.objects.get(template__slug="receipt", number=2)
    assert email.template_version == current
    assert email.subject == "Receipt no. 9"
