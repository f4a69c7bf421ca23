"""/api/v1/event-rules/: a client manages its own rules (scope `templates`)."""

import pytest

from event_sends.models import EventRule

pytestmark = pytest.mark.django_db
URL = "/api/v1/event-rules/"
RULE = {
    "event_type": "user.registered",
    "template": "welcome",
    "recipient_path": "user.email",
    "context_path": "user",
    "priority": "high",
    "tags": ["signup"],
}


def test_create_read_list_update_delete(api, welcome_template):
    """The full life of a rule, each answer showing what is stored."""
    created = api.post(URL, RULE, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert {key: body[key] for key in RULE} == RULE
    detail_url = f"{URL}{body['id']}/"
    assert created["Location"] == detail_url

    assert api.get(detail_url).json()["template"] == "welcome"
    assert [rule["id"] for rule in api.get(URL).json()] == [body["id"]]

    changed = api.patch(detail_url, {"priority": "low", "tags": []}, format="json")
    assert changed.status_code == 200, changed.json()
    assert (changed.json()["priority"], changed.json()["tags"]) == ("low", [])
    assert changed.json()["recipient_path"] == "user.email", "fields not given are kept"

    assert api.delete(detail_url).status_code == 204
    assert api.get(detail_url).status_code == 404
    assert not EventRule.objects.exists()


def test_defaults_whole_data_as_context_default_priority_no_tags(api, welcome_template):
    """Only event_type, template and recipient_path are required."""
    response = api.post(
        URL,
        {"event_type": "user.registered", "template": "welcome", "recipient_path": "email"},
        format="json",
    )

    assert response.status_code == 201
    assert (response.json()["context_path"], response.json()["priority"]) == ("", "default")
    assert response.json()["tags"] == []


def test_another_clients_rule_is_not_found(api, api_for, welcome_template):
    """beta neither sees nor changes nor deletes acme's rule; its own list is empty."""
    rule_id = api.post(URL, RULE, format="json").json()["id"]
    beta = api_for("beta", ["templates"])

    assert beta.get(URL).json() == []
    assert beta.get(f"{URL}{rule_id}/").status_code == 404
    assert beta.patch(f"{URL}{rule_id}/", {"priority": "low"}, format="json").status_code == 404
    assert beta.delete(f"{URL}{rule_id}/").status_code == 404
    assert EventRule.objects.get(pk=rule_id).priority == "high"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"template": "nope"}, "template"),
        ({"priority": "urgent"}, "priority"),
        ({"recipient_path": "user..email"}, "recipient_path"),
        ({"recipient_path": "user email"}, "recipient_path"),
        ({"recipient_path": ""}, "recipient_path"),
        ({"context_path": "data.$x"}, "context_path"),
        ({"event_type": "booking confirmed"}, "event_type"),
        ({"tags": "signup"}, "tags"),
        ({"tags": [""]}, "tags"),
        ({"templat": "welcome"}, "templat"),
    ],
)
def test_invalid_rules_are_400_naming_the_field(api, welcome_template, change, field):
    """Creating or changing a rule with a bad field answers 400 keyed by that field."""
    response = api.post(URL, {**RULE, **change}, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()

    rule_id = api.post(URL, RULE, format="json").json()["id"]
    response = api.patch(f"{URL}{rule_id}/", change, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()


def test_an_inactive_template_is_refused(api, welcome_template):
    """The template must be one a send could use."""
    welcome_template.is_active = False
    welcome_template.save()

    response = api.post(URL, RULE, format="json")

    assert response.status_code == 400 and "template" in response.json()


def test_scope_templates_is_required(api_for, welcome_template):
    """A key without `templates` gets 403 on every method; no key gets 401."""
    sender = api_for("acme", ["send", "read"])

    assert sender.get(URL).status_code == 403
    assert sender.post(URL, RULE, format="json").status_code == 403
    assert sender.get(f"{URL}1/").status_code == 403
    assert not EventRule.objects.exists()


def test_without_a_key_it_is_401(client):
    """The API needs a key."""
    assert client.get(URL).status_code == 401
