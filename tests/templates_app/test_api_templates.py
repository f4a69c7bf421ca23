"""The template API: list, create, read, replace, change, delete, render and test-send stored
templates."""

import pytest

from mailqueue.models import EmailJob
from templates_app.models import EmailTemplate
from tests.helpers import run_worker

TEMPLATES = "/api/v1/templates/"
FIELDS = {"slug", "name", "subject", "html", "text", "variables", "sample_context", "is_active"}


def receipt(**overrides) -> dict:
    """A valid template body, with overrides."""
    body = {
        "slug": "receipt",
        "name": "Receipt",
        "subject": "Receipt {{ number }}",
        "html": "<p>Total: {{ total }}</p>",
        "text": "Total: {{ total }}",
        "variables": ["number", "total"],
        "sample_context": {"number": "A-1", "total": "9.99"},
    }
    body.update(overrides)
    return body


def test_create_template(api):
    """POST creates a template: 201, every field echoed, Location to its detail."""
    response = api.post(TEMPLATES, receipt(), format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) >= FIELDS
    assert body["slug"] == "receipt"
    assert body["variables"] == ["number", "total"]
    assert body["is_active"] is True
    assert response["Location"] == "/api/v1/templates/receipt/"
    assert EmailTemplate.objects.filter(slug="receipt").exists()


def test_created_template_can_be_sent_at_once(api):
    """A template created through the API is usable for sending right away."""
    api.post(TEMPLATES, receipt(), format="json")

    response = api.post(
        "/api/v1/emails/",
        {"to": "ada@example.com", "template": "receipt", "context": {"number": 1, "total": 2}},
        format="json",
    )

    assert response.status_code == 202


def test_list_templates(api, welcome_template):
    """GET lists every template by slug."""
    api.post(TEMPLATES, receipt(), format="json")

    response = api.get(TEMPLATES)

    assert response.status_code == 200
    assert [item["slug"] for item in response.json()] == ["receipt", "welcome"]


def test_get_template(api, welcome_template):
    """GET /templates/{slug}/ returns all its fields."""
    response = api.get(f"{TEMPLATES}welcome/")

    assert response.status_code == 200
    body = response.json()
    assert set(body) >= FIELDS
    assert body["subject"] == "Welcome, {{ name }}!"
    assert body["sample_context"] == {"name": "Ada"}


def test_unknown_template_is_404(api):
    """Reading, changing, deleting or rendering a missing slug is a 404."""
    assert api.get(f"{TEMPLATES}nope/").status_code == 404
    assert api.patch(f"{TEMPLATES}nope/", {"name": "x"}, format="json").status_code == 404
    assert api.put(f"{TEMPLATES}nope/", receipt(slug="nope"), format="json").status_code == 404
    assert api.delete(f"{TEMPLATES}nope/").status_code == 404
    assert api.post(f"{TEMPLATES}nope/render/", {}, format="json").status_code == 404


def test_templates_are_global(api, api_for):
    """A template created by one client is visible to another client."""
    api.post(TEMPLATES, receipt(), format="json")

    other = api_for("globex", ["read"])

    assert other.get(f"{TEMPLATES}receipt/").status_code == 200
    assert [item["slug"] for item in other.get(TEMPLATES).json()] == ["receipt"]


def test_put_replaces_the_template(api, welcome_template):
    """PUT replaces every field; omitted optional fields go back to their defaults."""
    response = api.put(
        f"{TEMPLATES}welcome/",
        {"name": "Hello", "subject": "Hi {{ first }}", "text": "Hi {{ first }}"},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["slug"] == "welcome"
    assert body["subject"] == "Hi {{ first }}"
    assert body["html"] == ""
    assert body["variables"] == []
    welcome_template.refresh_from_db()
    assert welcome_template.name == "Hello"


def test_put_cannot_change_the_slug(api, welcome_template):
    """The slug is the template's identity: a different slug in a PUT is a 400 on `slug`."""
    response = api.put(f"{TEMPLATES}welcome/", receipt(slug="other"), format="json")

    assert response.status_code == 400
    assert "slug" in response.json()
    assert EmailTemplate.objects.filter(slug="welcome").exists()


def test_patch_changes_only_the_given_fields(api, welcome_template):
    """PATCH updates the fields sent and leaves the rest alone."""
    response = api.patch(f"{TEMPLATES}welcome/", {"subject": "Hey {{ name }}"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["subject"] == "Hey {{ name }}"
    assert body["html"] == "<p>Hello {{ name }}</p>"
    assert body["variables"] == ["name"]


def test_patch_can_deactivate_a_template(api, welcome_template):
    """`is_active: false` stops new sends with that template."""
    api.patch(f"{TEMPLATES}welcome/", {"is_active": False}, format="json")

    response = api.post(
        "/api/v1/emails/",
        {"to": "ada@example.com", "template": "welcome", "context": {"name": "Ada"}},
        format="json",
    )

    assert response.status_code == 400
    assert "template" in response.json()


def test_delete_unused_template_removes_it(api, welcome_template):
    """DELETE of a template no email used removes it (204)."""
    response = api.delete(f"{TEMPLATES}welcome/")

    assert response.status_code == 204
    assert not EmailTemplate.objects.filter(slug="welcome").exists()
    assert api.get(f"{TEMPLATES}welcome/").status_code == 404


def test_delete_used_template_deactivates_it(api, welcome_template):
    """A template some email used is kept for history but deactivated."""
    api.post(
        "/api/v1/emails/",
        {"to": "ada@example.com", "template": "welcome", "context": {"name": "Ada"}},
        format="json",
    )

    response = api.delete(f"{TEMPLATES}welcome/")

    assert response.status_code == 204
    assert api.get(f"{TEMPLATES}welcome/").json()["is_active"] is False


def test_duplicate_slug_is_400(api, welcome_template):
    """Creating a slug that exists is a 400 on `slug`."""
    response = api.post(TEMPLATES, receipt(slug="welcome"), format="json")

    assert response.status_code == 400
    assert "slug" in response.json()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"html": "{% if total %}<p>x</p>"}, "html"),
        ({"text": "{% if total %}x"}, "text"),
        ({"subject": "Receipt {% for x in y %}"}, "subject"),
        ({"html": "{{ total|no_such_filter }}"}, "html"),
        ({"subject": "{{ number|no_such_filter }}"}, "subject"),
        ({"text": "{% no_such_tag %}"}, "text"),
        ({"html": "{% load static %}{% static 'x.png' %}"}, "html"),
        ({"slug": "not a slug"}, "slug"),
        ({"slug": ""}, "slug"),
        ({"name": ""}, "name"),
        ({"subject": ""}, "subject"),
        ({"html": "", "text": ""}, "html"),
        ({"variables": ["ok", "not-an-identifier"]}, "variables"),
        ({"variables": "total"}, "variables"),
        ({"sample_context": ["a"]}, "sample_context"),
        ({"is_active": "maybe"}, "is_active"),
        ({"engine": "jinja"}, "engine"),
    ],
)
def test_bad_template_is_400_naming_the_field(api, overrides, field):
    """A template that does not compile, or a bad field, is a 400 naming that field."""
    response = api.post(TEMPLATES, receipt(**overrides), format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not EmailTemplate.objects.exists()


def test_syntax_error_message_names_the_line(api):
    """The compile error points at the line so the author can find it."""
    html = "<p>one</p>\n<p>two</p>\n{% if total %}<p>three</p>"

    response = api.post(TEMPLATES, receipt(html=html), format="json")

    assert response.status_code == 400
    assert "line 3" in response.json()["html"][0]


def test_update_that_breaks_the_template_is_refused(api, welcome_template):
    """A PATCH introducing a syntax error is a 400 and the stored template is unchanged."""
    response = api.patch(f"{TEMPLATES}welcome/", {"html": "{% if name %}"}, format="json")

    assert response.status_code == 400
    assert "html" in response.json()
    welcome_template.refresh_from_db()
    assert welcome_template.html == "<p>Hello {{ name }}</p>"


@pytest.mark.parametrize("payload", ["[]", "null", '"receipt"'])
def test_template_body_that_is_not_an_object_is_400(api, welcome_template, payload):
    """A body that is not a JSON object is a 400 for create, replace and change."""
    assert api.post(TEMPLATES, payload, content_type="application/json").status_code == 400
    url = f"{TEMPLATES}welcome/"
    assert api.put(url, payload, content_type="application/json").status_code == 400
    assert api.patch(url, payload, content_type="application/json").status_code == 400


# --- Rendering through the API ---------------------------------------------------------------


def test_render_returns_the_rendered_parts_and_sends_nothing(api, welcome_template):
    """POST /templates/{slug}/render/ returns subject, html and text; no email is created."""
    response = api.post(f"{TEMPLATES}welcome/render/", {"context": {"name": "Ada"}}, format="json")

    assert response.status_code == 200
    assert response.json() == {
        "subject": "Welcome, Ada!",
        "html": "<p>Hello Ada</p>",
        "text": "Hello Ada",
    }
    assert EmailJob.objects.count() == 0


def test_render_with_missing_variable_is_400(api, welcome_template):
    """A context lacking a required variable is a 400 on `context` naming it."""
    response = api.post(f"{TEMPLATES}welcome/render/", {"context": {}}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()["context"][0]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"context": ["Ada"]}, "context"), ({"ctx": {"name": "Ada"}}, "ctx")],
)
def test_render_with_bad_body_is_400(api, welcome_template, body, field):
    """A context that is not an object, or an unknown field, is a 400."""
    response = api.post(f"{TEMPLATES}welcome/render/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()


def test_render_of_a_template_another_client_made(api, api_for):
    """Any client with `read` can preview a global template."""
    api.post(TEMPLATES, receipt(), format="json")

    response = api_for("globex", ["read"]).post(
        f"{TEMPLATES}receipt/render/", {"context": {"number": 7, "total": "1.00"}}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["subject"] == "Receipt 7"


def test_read_only_key_cannot_write_templates(api_for, welcome_template):
    """A `read` key gets 403 naming the `templates` scope for every write, and nothing changes."""
    reader = api_for("acme", ["read", "send"])

    assert reader.post(TEMPLATES, receipt(), format="json").status_code == 403
    patched = reader.patch(f"{TEMPLATES}welcome/", {"name": "Hacked"}, format="json")
    assert patched.status_code == 403
    assert "'templates'" in patched.json()["detail"]
    assert reader.delete(f"{TEMPLATES}welcome/").status_code == 403
    welcome_template.refresh_from_db()
    assert welcome_template.name == "Welcome"
    assert not EmailTemplate.objects.filter(slug="receipt").exists()


# --- test send -----------------------------------------------------------------------------


def test_test_send_through_the_api_sends_the_sample_context_at_high_priority(
    api_for, welcome_template, smtp_sink, django_capture_on_commit_callbacks
):
    """An `admin` key sends a template's test email; it arrives rendered with the sample
    context, and the email belongs to the key's client (it can read it back)."""
    ops = api_for("ops", ["admin", "read"])
    with django_capture_on_commit_callbacks(execute=True):
        response = ops.post(
            "/api/v1/templates/welcome/test/", {"to": "qa@example.com"}, format="json"
        )
    assert response.status_code == 202
    assert response.json()["priority"] == "high"
    assert ops.get(response["Location"]).status_code == 200
    run_worker()
    [received] = smtp_sink.messages
    assert received.rcpt_tos == ["qa@example.com"]
    assert received.message["Subject"] == "Welcome, Ada!"


def test_test_send_needs_templates_or_admin_scope_and_a_valid_address(
    api_for, api, welcome_template
):
    """A `send`-only key is refused; a bad address or unknown template is a 4xx, nothing sent."""
    sender = api_for("shop", ["send", "read"])
    refused = sender.post("/api/v1/templates/welcome/test/", {"to": "a@b.co"}, format="json")
    assert refused.status_code == 403
    assert "'templates' or 'admin'" in refused.json()["detail"]
    bad = api.post("/api/v1/templates/welcome/test/", {"to": "not an address"}, format="json")
    assert bad.status_code == 400 and "to" in bad.json()
    missing = api.post("/api/v1/templates/nope/test/", {"to": "a@b.co"}, format="json")
    assert missing.status_code == 404
    assert not EmailJob.objects.exists()
