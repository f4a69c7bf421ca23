"""Input checks shared by every API operation: times, JSON objects, text, offered methods."""

from datetime import UTC, datetime

import pytest
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.api.views import ScopedApiView
from mailqueue.models import Batch, EmailJob

EMAILS = "/api/v1/emails/"
BATCHES = "/api/v1/batches/"

# Valid ISO 8601 times that PostgreSQL cannot store or that overflow when converted to UTC.
UNSTORABLE_TIMES = [
    "2027-01-01T10:00:00+17:18",
    "2027-01-01T10:00:00-16:00",
    "9999-12-31T23:59:59-23:59",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
]


def raw_email(**overrides) -> dict:
    """A valid raw-content email body, with overrides."""
    return {"to": "ada@example.com", "subject": "Hello", "text": "Hi Ada", **overrides}


@pytest.mark.parametrize("send_at", UNSTORABLE_TIMES)
def test_unstorable_send_at_is_400_naming_it(api, send_at):
    """An offset beyond PostgreSQL's range or a year at the edge of the calendar is a 400."""
    response = api.post(EMAILS, raw_email(send_at=send_at), format="json")

    assert response.status_code == 400
    assert "send_at" in response.json()
    assert EmailJob.objects.count() == 0


@pytest.mark.parametrize("send_at", UNSTORABLE_TIMES)
def test_unstorable_batch_send_at_is_400_naming_it(api, welcome_template, send_at):
    """The same range check guards a batch's send_at."""
    body = {
        "template": "welcome",
        "recipients": [{"to": "ada@example.com", "context": {"name": "Ada"}}],
        "send_at": send_at,
    }
    response = api.post(BATCHES, body, format="json")

    assert response.status_code == 400
    assert "send_at" in response.json()
    assert Batch.objects.count() == 0


@pytest.mark.parametrize("name", ["created_before", "created_after"])
@pytest.mark.parametrize("value", UNSTORABLE_TIMES)
def test_unstorable_list_filter_time_is_400_naming_it(api, name, value):
    """created_before/created_after go through the same check as send_at."""
    response = api.get(EMAILS, {name: value})

    assert response.status_code == 400
    assert name in response.json()


def test_largest_offset_postgresql_stores_is_accepted(api):
    """+15:59 is still a time PostgreSQL stores: accepted, same instant."""
    response = api.post(EMAILS, raw_email(send_at="2999-01-01T15:59:00+15:59"), format="json")

    assert response.status_code == 202
    stored = EmailJob.objects.get(pk=response.json()["id"]).send_at
    assert stored == datetime(2999, 1, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "field", "body"),
    [
        (EMAILS, "metadata", raw_email(metadata=["a"])),
        (EMAILS, "headers", raw_email(headers="X-Tag: 1")),
        ("/api/v1/templates/welcome/render/", "context", {"context": [1]}),
    ],
)
def test_json_object_fields_refuse_other_json(api, welcome_template, url, field, body):
    """Fields documented as JSON objects refuse lists and strings with a 400 naming them."""
    response = api.post(url, body, format="json")

    assert response.status_code == 400
    assert response.json()[field] == ["Must be a JSON object."]


def test_number_for_text_is_400_not_coerced(api):
    """`"subject": 7` is refused, not stored as the text "7" (the schema says string)."""
    response = api.post(EMAILS, raw_email(subject=7), format="json")

    assert response.status_code == 400
    assert "subject" in response.json()


def test_batch_size_is_refused_before_recipients_are_checked(api, welcome_template, settings):
    """Too many recipients is one message on `recipients`, even when every item is bad."""
    settings.MAILQUEUE_BATCH_MAX = 2
    body = {"template": "welcome", "recipients": [{"to": "bad"}] * 3}

    response = api.post(BATCHES, body, format="json")

    assert response.status_code == 400
    assert response.json()["recipients"] == ["Too many recipients: 3 (the limit is 2)."]


class ForgottenScopeApi(ScopedApiView):
    """A view whose PUT handler was added without a scope in `required_scopes`."""

    required_scopes = {"GET": "read"}

    def get(self, request: Request) -> Response:
        """Answer."""
        return Response({"ok": True})

    def put(self, request: Request) -> Response:
        """Must never run: no scope is named for PUT."""
        return Response({"changed": True})


urlpatterns = [path("forgotten/", ForgottenScopeApi.as_view())]


@pytest.mark.urls(__name__)
def test_method_without_a_scope_is_405_for_every_key(api):
    """A handler missing from `required_scopes` is not offered: 405, Allow lists GET only."""
    response = api.put("/forgotten/", {}, format="json")

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert api.get("/forgotten/").status_code == 200


@pytest.mark.parametrize("method", ["options", "delete"])
def test_methods_a_view_does_not_map_are_405(api, method):
    """OPTIONS (which DRF implements on every view) and DELETE are not offered on /emails/."""
    response = getattr(api, method)(EMAILS)

    assert response.status_code == 405
    assert response["Allow"] == "POST, GET, HEAD"
