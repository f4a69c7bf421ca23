"""The suppression list: its API, the admin, and suppressed recipients dropped at send time."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from mailqueue.models import Client, EmailStatus, Suppression, SuppressionReason
from mailqueue.services.suppressions import NewSuppression, suppressions_add
from tracking.models import EventType

pytestmark = pytest.mark.django_db


def _add(address: str, reason: str, client: Client | None = None, topic: str = "") -> None:
    suppressions_add(
        entries=[NewSuppression(address=address, reason=reason, client=client, topic=topic)]
    )


@pytest.fixture
def acme(issued_key) -> Client:
    """The client the `api` fixture calls as."""
    return issued_key.api_key.client


# --- API -------------------------------------------------------------------------------------


def test_create_list_and_delete_a_manual_entry(api, acme):
    """A client adds an address, sees it listed, and removes it; a second removal is a 404."""
    response = api.post(
        "/api/v1/suppressions/", {"address": "Ada <ADA@Example.com>"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["address"] == "ada@example.com"
    assert response.json()["reason"] == "manual"
    assert response.json()["service_wide"] is False

    listed = api.get("/api/v1/suppressions/").json()["results"]
    assert [(e["address"], e["reason"]) for e in listed] == [("ada@example.com", "manual")]

    assert api.delete("/api/v1/suppressions/ada@example.com/").status_code == 204
    assert not Suppression.objects.exists()
    assert api.delete("/api/v1/suppressions/ada@example.com/").status_code == 404


def test_list_shows_own_and_service_wide_entries_not_other_clients(api, acme, api_for):
    """Hard bounces show as service-wide entries the client cannot delete; other clients'
    entries stay invisible."""
    api_for("globex", ["send"])
    globex = Client.objects.get(name="globex")
    _add("bounced@example.com", SuppressionReason.HARD_BOUNCE)
    _add("theirs@example.com", SuppressionReason.MANUAL, client=globex)
    _add("mine@example.com", SuppressionReason.UNSUBSCRIBE, client=acme, topic="news")

    listed = api.get("/api/v1/suppressions/").json()["results"]
    assert {(e["address"], e["service_wide"], e["topic"]) for e in listed} == {
        ("bounced@example.com", True, ""),
        ("mine@example.com", False, "news"),
    }
    only = api.get("/api/v1/suppressions/", {"reason": "hard_bounce"}).json()["results"]
    assert [e["address"] for e in only] == ["bounced@example.com"]
    by_address = api.get("/api/v1/suppressions/", {"address": "MINE@example.com"}).json()
    assert [e["address"] for e in by_address["results"]] == ["mine@example.com"]

    assert api.delete("/api/v1/suppressions/bounced@example.com/").status_code == 404
    assert api.delete("/api/v1/suppressions/theirs@example.com/").status_code == 404
    assert Suppression.objects.count() == 3


def test_list_pages_with_a_cursor(api, acme):
    """The list pages like the emails list."""
    for n in range(3):
        _add(f"user{n}@example.com", SuppressionReason.MANUAL, client=acme)
    first = api.get("/api/v1/suppressions/", {"page_size": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1


def test_delete_with_topic_removes_only_that_topic(api, acme):
    """`?topic=` deletes only that topic's entries of the address."""
    _add("ada@example.com", SuppressionReason.UNSUBSCRIBE, client=acme, topic="news")
    _add("ada@example.com", SuppressionReason.MANUAL, client=acme)
    assert api.delete("/api/v1/suppressions/ada@example.com/?topic=news").status_code == 204
    assert list(Suppression.objects.values_list("reason", flat=True)) == ["manual"]
    assert api.delete("/api/v1/suppressions/ada@example.com/?topic=news").status_code == 404


def test_bad_input_names_the_field(api):
    """A malformed address or reason is a 400 naming the field."""
    bad = api.post("/api/v1/suppressions/", {"address": "not an address"}, format="json")
    assert bad.status_code == 400 and "address" in bad.json()
    reason = api.post(
        "/api/v1/suppressions/",
        {"address": "a@example.com", "reason": "hard_bounce"},
        format="json",
    )
    assert reason.status_code == 400 and "reason" in reason.json()
    deleted = api.delete("/api/v1/suppressions/nope/")
    assert deleted.status_code == 400 and "address" in deleted.json()
    assert api.get("/api/v1/suppressions/", {"reason": "x"}).status_code == 400


def test_scopes(api_for):
    """Listing needs `read`, adding and removing `send`."""
    reader = api_for("acme", ["read"])
    sender = api_for("acme", ["send"])
    assert reader.get("/api/v1/suppressions/").status_code == 200
    body = {"address": "a@example.com"}
    assert reader.post("/api/v1/suppressions/", body, format="json").status_code == 403
    assert sender.get("/api/v1/suppressions/").status_code == 403
    assert sender.post("/api/v1/suppressions/", body, format="json").status_code == 201
    assert reader.delete("/api/v1/suppressions/a@example.com/").status_code == 403


# --- Sending ---------------------------------------------------------------------------------


def test_a_fully_suppressed_email_never_reaches_the_provider(send, work, smtp_sink):
    """A hard-bounced address stops every client's email: status `suppressed`, an event naming
    the reason, nothing sent."""
    _add("ada@example.com", SuppressionReason.HARD_BOUNCE)
    email = send(to="Ada <ADA@example.com>")
    work()
    email.refresh_from_db()
    assert email.status == EmailStatus.SUPPRESSED
    assert smtp_sink.messages == []
    assert not email.delivery_attempts.exists()
    event = email.events.get(event_type=EventType.SUPPRESSED)
    assert event.recipient == "ada@example.com"
    assert "hard_bounce" in event.description
    assert "suppression list" in email.last_error


def test_a_partly_suppressed_email_goes_to_the_rest(send, work, smtp_sink, acme):
    """Dropped recipients get a `suppressed` event each; the others receive the message."""
    _add("cc@example.com", SuppressionReason.COMPLAINT)
    _add("bcc@example.com", SuppressionReason.MANUAL, client=acme)
    email = send(to="ada@example.com", cc=["cc@example.com"], bcc=["bcc@example.com"])
    work()
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert smtp_sink.messages[0].rcpt_tos == ["ada@example.com"]
    assert smtp_sink.messages[0].message["Cc"] is None
    dropped = email.events.filter(event_type=EventType.SUPPRESSED)
    assert {(e.recipient, e.data["reason"]) for e in dropped} == {
        ("cc@example.com", "complaint"),
        ("bcc@example.com", "manual"),
    }


def test_unsubscribes_stop_only_non_transactional_email_of_their_topic(send, work, smtp_sink, acme):
    """An unsubscribe never stops transactional email; a topic's only that topic's email; an
    unsubscribe without a topic stops all of the client's non-transactional email."""
    _add("ada@example.com", SuppressionReason.UNSUBSCRIBE, client=acme, topic="news")
    _add("bob@example.com", SuppressionReason.UNSUBSCRIBE, client=acme)
    receipt = send(to="ada@example.com")
    news = send(to="ada@example.com", topic="news")
    offers = send(to="ada@example.com", topic="offers")
    bob_receipt = send(to="bob@example.com")
    bob_marketing = send(to="bob@example.com", transactional=False)
    bob_offers = send(to="bob@example.com", topic="offers")
    work()
    statuses = {
        name: type(email).objects.get(pk=email.pk).status
        for name, email in {
            "receipt": receipt,
            "news": news,
            "offers": offers,
            "bob_receipt": bob_receipt,
            "bob_marketing": bob_marketing,
            "bob_offers": bob_offers,
        }.items()
    }
    assert statuses == {
        "receipt": "sent",
        "news": "suppressed",
        "offers": "sent",
        "bob_receipt": "sent",
        "bob_marketing": "suppressed",
        "bob_offers": "suppressed",
    }


def test_another_clients_entries_do_not_apply(send, work, smtp_sink, api_for):
    """A client's manual entry or unsubscribe stops only that client's email."""
    api_for("globex", ["send"])
    globex = Client.objects.get(name="globex")
    _add("ada@example.com", SuppressionReason.MANUAL, client=globex)
    email = send(to="ada@example.com", transactional=False)
    work()
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT


def test_one_suppression_query_per_chunk(send, work, smtp_sink):
    """The worker asks the suppression table once for a whole chunk of emails."""
    _add("x@example.com", SuppressionReason.HARD_BOUNCE)
    for n in range(5):
        send(to=f"user{n}@example.com")
    with CaptureQueriesContext(connection) as queries:
        work()
    asked = [q for q in queries.captured_queries if '"suppressions"' in q["sql"]]
    assert len(asked) == 1
    assert len(smtp_sink.messages) == 5


def test_an_address_suppressed_while_the_email_waits_is_honoured(
    api, acme, work, smtp_sink, django_capture_on_commit_callbacks
):
    """POST /emails/ still answers 202; the check happens at send time."""
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/emails/",
            {"to": ["ada@example.com"], "subject": "Hi", "text": "Hello"},
            format="json",
        )
    assert response.status_code == 202
    api.post("/api/v1/suppressions/", {"address": "ada@example.com"}, format="json")
    work()
    detail = api.get(f"/api/v1/emails/{response.json()['id']}/").json()
    assert detail["status"] == "suppressed"
    assert any(e["type"] == "suppressed" for e in detail["events"])


# --- Admin -----------------------------------------------------------------------------------


def test_admin_lists_searches_adds_and_removes(admin_client, acme):
    """Operators see every entry, search by address, add and remove (service-wide too)."""
    _add("bounced@example.com", SuppressionReason.HARD_BOUNCE)
    _add("ada@example.com", SuppressionReason.MANUAL, client=acme)
    url = "/admin/mailqueue/suppression/"
    page = admin_client.get(url)
    assert page.status_code == 200
    assert b"bounced@example.com" in page.content and b"ada@example.com" in page.content
    found = admin_client.get(url, {"q": "BOUNCED@"})
    assert b"bounced@example.com" in found.content and b"ada@example.com" not in found.content

    added = admin_client.post(
        f"{url}add/", {"address": "New@Example.com", "reason": "complaint", "topic": ""}
    )
    assert added.status_code == 302
    entry = Suppression.objects.get(address="new@example.com")
    assert entry.client_id is None

    bounced = Suppression.objects.get(address="bounced@example.com")
    removed = admin_client.post(f"{url}{bounced.pk}/delete/", {"post": "yes"})
    assert removed.status_code == 302
    assert not Suppression.objects.filter(pk=bounced.pk).exists()


def test_admin_add_needs_a_client_for_manual_entries(admin_client):
    """A manual entry without a client is refused on the form."""
    response = admin_client.post(
        "/admin/mailqueue/suppression/add/", {"address": "a@example.com", "reason": "manual"}
    )
    assert response.status_code == 200
    assert not Suppression.objects.exists()


def test_admin_csv_export_and_import_round_trip(admin_client, acme):
    """What the export writes, the import reads back; bad rows are reported."""
    _add("bounced@example.com", SuppressionReason.HARD_BOUNCE)
    _add("ada@example.com", SuppressionReason.UNSUBSCRIBE, client=acme, topic="news")
    export = admin_client.get("/admin/mailqueue/suppression/export/")
    assert export.status_code == 200
    csv_text = b"".join(export.streaming_content).decode()
    assert csv_text.splitlines()[0] == "address,reason,client,topic,created_at"
    assert "ada@example.com,unsubscribe,acme,news," in csv_text

    Suppression.objects.all().delete()
    upload = SimpleUploadedFile(
        "s.csv", (csv_text + "bad-address,manual,acme,,\nx@example.com,nope,,,\n").encode()
    )
    response = admin_client.post(
        "/admin/mailqueue/suppression/import/", {"file": upload}, follow=True
    )
    assert response.status_code == 200
    assert set(Suppression.objects.values_list("address", "reason", "topic")) == {
        ("bounced@example.com", "hard_bounce", ""),
        ("ada@example.com", "unsubscribe", "news"),
    }
    assert Suppression.objects.get(address="ada@example.com").client == acme
    text = " ".join(str(m) for m in response.context["messages"])
    assert "2 entries added" in text and "unknown reason" in text and "row 4" in text
