"""API keys, scopes, per-client isolation, throttling, and the OpenAPI schema and docs."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from mailqueue.models import ApiKey
from mailqueue.services import api_key_authenticate, api_key_revoke, api_key_update

EMAILS = "/api/v1/emails/"
RAW_EMAIL = {"to": "ada@example.com", "subject": "Hi", "text": "Hello"}
TEMPLATE = {"slug": "promo", "name": "Promo", "subject": "Hi", "text": "Hello"}


def bearer(token: str) -> APIClient:
    """An API client sending `Authorization: Bearer <token>`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


ENDPOINTS = [
    ("get", EMAILS),
    ("post", EMAILS),
    ("get", f"{EMAILS}00000000-0000-0000-0000-000000000000/"),
    ("post", "/api/v1/batches/"),
    ("get", "/api/v1/templates/"),
    ("post", "/api/v1/templates/welcome/render/"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_missing_key_is_401_with_bearer_challenge(method, path):
    """Without an Authorization header every API endpoint answers 401 and a Bearer challenge."""
    response = getattr(APIClient(), method)(path, {}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer garbage",
        "Bearer mq_deadbeef_wrongsecret",
        "Bearer",
        "Bearer two words",
        "Basic dXNlcjpwYXNz",
        "Token mq_a_b",
    ],
)
def test_malformed_or_unknown_key_is_401(issued_key, header):
    """A wrong key, a wrong scheme or a malformed header is a 401 with the challenge."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get(EMAILS)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_right_prefix_with_wrong_secret_is_401(issued_key):
    """Knowing a key's prefix is not enough."""
    prefix = issued_key.api_key.prefix

    response = bearer(f"mq_{prefix}_{'x' * 43}").get(EMAILS)

    assert response.status_code == 401


def test_valid_key_is_accepted_and_marks_last_use(issued_key):
    """A valid key authenticates, and the key's last_used_at is recorded for operators."""
    response = bearer(issued_key.plaintext).get(EMAILS)

    assert response.status_code == 200
    assert ApiKey.objects.get(pk=issued_key.api_key.pk).last_used_at is not None


def test_last_use_is_written_at_most_once_a_minute(issued_key):
    """Requests within a minute of the recorded last use write nothing; a later one does."""
    client = bearer(issued_key.plaintext)
    client.get(EMAILS)
    recorded = ApiKey.objects.get(pk=issued_key.api_key.pk).last_used_at

    with CaptureQueriesContext(connection) as queries:
        assert client.get(EMAILS).status_code == 200
    ApiKey.objects.filter(pk=issued_key.api_key.pk).update(
        last_used_at=recorded - timedelta(minutes=2)
    )
    client.get(EMAILS)

    assert not [query for query in queries if query["sql"].startswith("UPDATE")]
    assert ApiKey.objects.get(pk=issued_key.api_key.pk).last_used_at > recorded


def test_authenticated_key_is_the_stored_key_with_its_client(issued_key):
    """The key a request runs as carries every stored value, and its client's name."""
    stored = ApiKey.objects.select_related("client").get(pk=issued_key.api_key.pk)

    api_key = api_key_authenticate(token=issued_key.plaintext)

    for field in ApiKey._meta.concrete_fields:
        if field.name != "last_used_at":  # written by this very authentication
            assert getattr(api_key, field.attname) == getattr(stored, field.attname), field.name
    assert api_key.last_used_at is not None
    assert api_key.client == stored.client
    assert api_key.client.name == "acme"


def test_scope_change_applies_to_the_next_request(issued_key):
    """Taking the `send` scope away from a key refuses its very next send."""
    client = bearer(issued_key.plaintext)
    assert client.post(EMAILS, RAW_EMAIL, format="json").status_code == 202

    api_key_update(api_key=issued_key.api_key, scopes=["read"])

    response = client.post(EMAILS, RAW_EMAIL, format="json")
    assert response.status_code == 403
    assert "'send'" in response.json()["detail"]


def test_revoked_key_is_401(issued_key):
    """A revoked key stops working at once."""
    client = bearer(issued_key.plaintext)
    assert client.get(EMAILS).status_code == 200

    api_key_revoke(api_key=issued_key.api_key)

    response = client.get(EMAILS)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("scopes", "method", "path", "body", "needed"),
    [
        (["read"], "post", EMAILS, RAW_EMAIL, "send"),
        (["templates"], "post", EMAILS, RAW_EMAIL, "send"),
        (["send"], "get", EMAILS, None, "read"),
        (["templates"], "get", EMAILS, None, "read"),
        (["read"], "post", "/api/v1/batches/", {}, "send"),
        (["read"], "post", f"{EMAILS}00000000-0000-0000-0000-000000000000/retry/", None, "send"),
        (["read"], "post", f"{EMAILS}00000000-0000-0000-0000-000000000000/cancel/", None, "send"),
        (["send"], "get", "/api/v1/batches/00000000-0000-0000-0000-000000000000/", None, "read"),
        (["send"], "get", "/api/v1/templates/", None, "read"),
        (["read"], "post", "/api/v1/templates/", TEMPLATE, "templates"),
        (["send", "read"], "delete", "/api/v1/templates/welcome/", None, "templates"),
        (["read"], "patch", "/api/v1/templates/welcome/", {"name": "x"}, "templates"),
        (["read"], "put", "/api/v1/templates/welcome/", TEMPLATE, "templates"),
        (["send"], "post", "/api/v1/templates/welcome/render/", {}, "read"),
    ],
)
def test_key_without_the_needed_scope_is_403_naming_it(api_for, scopes, method, path, body, needed):
    """A valid key lacking the scope gets 403 with a message naming the missing scope."""
    client = api_for("acme", scopes)

    response = getattr(client, method)(path, body, format="json")

    assert response.status_code == 403
    assert f"'{needed}'" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("scopes", "method", "path", "body", "expected"),
    [
        (["send"], "post", EMAILS, RAW_EMAIL, 202),
        (["read"], "get", EMAILS, None, 200),
        (["read"], "get", "/api/v1/templates/", None, 200),
        (["read"], "get", "/api/v1/templates/welcome/", None, 200),
        (["read"], "post", "/api/v1/templates/welcome/render/", {"context": {"name": "A"}}, 200),
        (["templates"], "get", "/api/v1/templates/", None, 200),
        (["templates"], "get", "/api/v1/templates/welcome/", None, 200),
        (["templates"], "post", "/api/v1/templates/welcome/render/", {}, 400),
        (["templates"], "post", "/api/v1/templates/", TEMPLATE, 201),
        (["templates"], "patch", "/api/v1/templates/welcome/", {"name": "Hi"}, 200),
    ],
)
def test_key_with_the_scope_is_let_through(
    api_for, welcome_template, scopes, method, path, body, expected
):
    """Each scope opens exactly its operations (`templates` also reads templates and renders)."""
    client = api_for("acme", scopes)

    response = getattr(client, method)(path, body, format="json")

    assert response.status_code == expected, response.content


# --- Isolation between clients ----------------------------------------------------------------


def test_another_clients_email_is_404(api, api_for):
    """A key never sees, retries or cancels another client's email: it looks like it's missing."""
    email_id = api.post(EMAILS, RAW_EMAIL, format="json").json()["id"]
    other = api_for("globex", ["send", "read"])

    assert other.get(f"{EMAILS}{email_id}/").status_code == 404
    assert other.post(f"{EMAILS}{email_id}/cancel/").status_code == 404
    assert other.post(f"{EMAILS}{email_id}/retry/").status_code == 404
    assert other.get(EMAILS).json()["results"] == []
    assert api.get(f"{EMAILS}{email_id}/").json()["status"] == "queued"


def test_keys_of_the_same_client_share_its_emails(api, api_for):
    """Emails belong to the client, so a second key of `acme` sees the first key's emails."""
    email_id = api.post(EMAILS, RAW_EMAIL, format="json").json()["id"]

    response = api_for("acme", ["read"]).get(f"{EMAILS}{email_id}/")

    assert response.status_code == 200


def test_another_clients_batch_is_404(api, api_for, welcome_template):
    """Batches are private to their client, in detail and as a list filter."""
    batch_id = api.post(
        "/api/v1/batches/",
        {"template": "welcome", "recipients": [{"to": "a@example.com", "context": {"name": "A"}}]},
        format="json",
    ).json()["id"]
    other = api_for("globex", ["read"])

    assert other.get(f"/api/v1/batches/{batch_id}/").status_code == 404
    assert other.get(f"{EMAILS}?batch={batch_id}").json()["results"] == []


# --- Throttling -------------------------------------------------------------------------------


def test_throttle_limits_requests_per_key(api, api_for, settings):
    """With MAILQUEUE_API_THROTTLE_RATE set, a key over its rate gets 429; other keys do not."""
    settings.MAILQUEUE_API_THROTTLE_RATE = "2/min"

    statuses = [api.get(EMAILS).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert api_for("acme", ["read"]).get(EMAILS).status_code == 200


def test_no_throttle_by_default(api):
    """Without a configured rate, many requests in a row all pass."""
    assert {api.get(EMAILS).status_code for _ in range(30)} == {200}


# --- OpenAPI schema and docs ------------------------------------------------------------------


@pytest.mark.django_db
def test_schema_is_served_without_a_key():
    """GET /api/schema/ works without an API key and documents the emails endpoint."""
    response = APIClient().get("/api/schema/")

    assert response.status_code == 200
    assert b"/api/v1/emails/:" in response.content


@pytest.mark.django_db
def test_schema_declares_bearer_auth():
    """The schema tells clients (and Swagger's Authorize button) to send a Bearer key."""
    response = APIClient().get("/api/schema/", {"format": "json"})

    schema = json.loads(response.content)
    schemes = schema["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= next(iter(schemes.values())).items()
    name = next(iter(schemes))
    assert {name: []} in schema["paths"]["/api/v1/emails/"]["post"]["security"]


@pytest.mark.django_db
def test_docs_page_is_served_without_a_key():
    """GET /api/docs/ serves the Swagger UI page to a developer without an API key."""
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"/api/schema/" in response.content


@pytest.mark.django_db
def test_schema_documents_that_to_takes_one_address_or_a_list():
    """Generated clients may send `to` as a string or a list, as the API accepts both."""
    response = APIClient().get("/api/schema/", {"format": "json"})

    to = json.loads(response.content)["components"]["schemas"]["EmailCreateInput"]["properties"][
        "to"
    ]
    assert {option["type"] for option in to["oneOf"]} == {"string", "array"}
