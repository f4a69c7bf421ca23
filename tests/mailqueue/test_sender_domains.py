"""Sender domains: a client sends only from domains it verified (by a DNS TXT record, checked
against a real DNS server on 127.0.0.1, or by an operator)."""

import importlib
import socket
import threading
import time

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from mailqueue import conf
from mailqueue.errors import ValidationFailed
from mailqueue.models import Batch, Client, EmailJob, SenderDomain
from mailqueue.services import email_create
from mailqueue.services.sender_domains import (
    sender_check,
    sender_domain_create,
    sender_domains_backfill,
)
from tests.helpers import sender_domains_verify
from topics.services import subscriber_subscribe, topic_create, topic_email_create

pytestmark = pytest.mark.django_db

DOMAINS = "/api/v1/sender-domains/"


class DnsResponder:
    """A real DNS server over UDP on 127.0.0.1: answers TXT queries from `records` (name ->
    list of TXT rdata texts, None for a name that exists without TXT), NXDOMAIN for any other
    name, and nothing at all for names in `silent`."""

    def __init__(self) -> None:
        self.records: dict[str, list[str] | None] = {}
        self.silent: set[str] = set()
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def publish(self, name: str, *values: str) -> None:
        """Publish TXT values (each one quoted string) at a name."""
        self.records.setdefault(name, [])
        self.records[name] = [*(self.records[name] or []), *(f'"{v}"' for v in values)]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            self.queries.append(name)
            if name in self.silent:
                continue
            response = dns.message.make_response(query)
            if name not in self.records:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif self.records[name] and question.rdtype == dns.rdatatype.TXT:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 60, "IN", "TXT", self.records[name])
                )
            self.sock.sendto(response.to_wire(), peer)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def dns_server(settings):
    """A local DNS server the sender-domain verification asks (and nothing else)."""
    server = DnsResponder()
    settings.MAILQUEUE_DNS_NAMESERVERS = [f"127.0.0.1:{server.port}"]
    settings.MAILQUEUE_DNS_TIMEOUT_SECONDS = 2
    yield server
    server.stop()


@pytest.fixture
def acme(issued_key) -> Client:
    """The `api` fixture's client."""
    return issued_key.api_key.client


def register(api, domain: str) -> dict:
    """Register a domain through the API; its body."""
    response = api.post(DOMAINS, {"domain": domain}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def verify(api, domain_id: int):
    """Ask the API to verify a domain by DNS now."""
    return api.post(f"{DOMAINS}{domain_id}/verify/", format="json")


def send(api, **fields):
    """POST one plain email with extra fields."""
    body = {"to": "ada@example.net", "subject": "Hi", "text": "Hello", **fields}
    return api.post("/api/v1/emails/", body, format="json")


# --- Registering ------------------------------------------------------------------------------


def test_registering_a_domain_returns_the_txt_record_to_publish(api, acme, api_for):
    """201 with the token and where to publish it; listed and shown to its client only."""
    response = api.post(DOMAINS, {"domain": " Example.COM. "}, format="json")

    assert response.status_code == 201
    body = response.json()
    token = body["verification_token"]
    assert len(token) >= 32
    assert body["domain"] == "example.com"
    assert body["client"] == "acme"
    assert (body["verified"], body["verified_at"], body["verified_by"]) == (False, None, "")
    assert body["txt_record"] == {
        "name": "_mailqueue.example.com",
        "type": "TXT",
        "value": f"mailqueue-verification={token}",
    }
    assert response["Location"] == f"{DOMAINS}{body['id']}/"
    assert [d["domain"] for d in api.get(DOMAINS).json()] == ["example.com"]
    assert api.get(f"{DOMAINS}{body['id']}/").json() == body

    other = api_for("globex", ["send", "read"])
    assert other.get(DOMAINS).json() == []
    assert other.get(f"{DOMAINS}{body['id']}/").status_code == 404
    assert other.delete(f"{DOMAINS}{body['id']}/").status_code == 404


def test_an_internationalized_domain_is_stored_as_punycode(api):
    """`Bücher.de` is stored as `xn--bcher-kva.de` and shown in both forms."""
    body = register(api, "Bücher.de")

    assert body["domain"] == "xn--bcher-kva.de"
    assert body["unicode_domain"] == "bücher.de"
    assert body["txt_record"]["name"] == "_mailqueue.xn--bcher-kva.de"


@pytest.mark.parametrize(
    "domain",
    [
        "",
        "not a domain",
        "ada@example.com",
        "https://example.com",
        "*.example.com",
        "-bad.example.com",
        "192.168.1.1",
        "a" * 64 + ".com",
        "example..com",
        "xn--zz.com",
        "intranet",
        ["example.com"],
    ],
)
def test_a_malformed_domain_is_400_naming_the_field(api, domain):
    """Only a hostname is a sender domain."""
    response = api.post(DOMAINS, {"domain": domain}, format="json")

    assert response.status_code == 400
    assert "domain" in response.json()
    assert not SenderDomain.objects.exists()


def test_registering_the_same_domain_twice_is_409(api):
    """One row per client and domain, whatever its case."""
    register(api, "example.com")

    response = api.post(DOMAINS, {"domain": "EXAMPLE.com"}, format="json")

    assert response.status_code == 409
    assert "already" in response.json()["domain"][0]


def test_a_read_key_lists_but_cannot_register_or_delete(api, api_for):
    """GET needs `read` or `send`; POST and DELETE need `send`."""
    body = register(api, "example.com")
    reader = api_for("acme", ["read"])

    assert reader.get(DOMAINS).status_code == 200
    assert reader.post(DOMAINS, {"domain": "x.example"}, format="json").status_code == 403
    assert reader.delete(f"{DOMAINS}{body['id']}/").status_code == 403
    assert reader.post(f"{DOMAINS}{body['id']}/verify/").status_code == 403


def test_deleting_a_domain_stops_its_emails(api, acme):
    """Once removed, an email from the domain is refused."""
    sender_domains_verify(acme, "example.com")
    assert send(api, from_email="shop@example.com").status_code == 202
    domain_id = SenderDomain.objects.get(client=acme).pk

    assert api.delete(f"{DOMAINS}{domain_id}/").status_code == 204

    assert send(api, from_email="shop@example.com").status_code == 400
    assert api.get(f"{DOMAINS}{domain_id}/").status_code == 404


# --- Verifying by DNS ---------------------------------------------------------------------------


def test_the_published_token_verifies_the_domain(api, dns_server):
    """The TXT record at _mailqueue.<domain> carries the token: verified by DNS, sends pass."""
    body = register(api, "example.com")
    dns_server.publish("_mailqueue.example.com", "v=spf1 -all", body["txt_record"]["value"])

    response = verify(api, body["id"])

    assert response.status_code == 200, response.json()
    assert response.json()["verified"] is True
    assert response.json()["verified_by"] == "dns"
    assert response.json()["verified_at"]
    assert dns_server.queries == ["_mailqueue.example.com"]
    assert send(api, from_email="Shop <shop@example.com>").status_code == 202


def test_a_token_split_over_txt_strings_verifies(api, dns_server):
    """A TXT record's strings are one value (long values are split into 255-byte strings)."""
    body = register(api, "example.com")
    value = body["txt_record"]["value"]
    dns_server.records["_mailqueue.example.com"] = [f'"{value[:20]}" "{value[20:]}"']

    assert verify(api, body["id"]).json()["verified"] is True


def test_an_internationalized_domain_verifies_at_its_punycode_name(api, dns_server):
    """The record is looked up at the ASCII name DNS knows."""
    body = register(api, "bücher.de")
    dns_server.publish("_mailqueue.xn--bcher-kva.de", body["txt_record"]["value"])

    assert verify(api, body["id"]).status_code == 200
    assert send(api, from_email="info@Bücher.de").status_code == 202


@pytest.mark.parametrize(
    ("published", "reason", "words"),
    [
        ({}, "nxdomain", "NXDOMAIN"),
        ({"_mailqueue.example.com": None}, "no_txt", "no TXT record"),
        ({"_mailqueue.example.com": ['"mailqueue-verification=0000"']}, "wrong_token", "0000"),
        ({"example.com": ['"mailqueue-verification=TOKEN"']}, "nxdomain", "NXDOMAIN"),
    ],
)
def test_a_missing_or_wrong_record_is_409_naming_the_reason(
    api, acme, dns_server, published, reason, words
):
    """No such name, no TXT there, another token, or the token at the apex: 409, unverified."""
    body = register(api, "example.com")
    for name, values in published.items():
        dns_server.records[name] = values and [
            v.replace("TOKEN", body["verification_token"]) for v in values
        ]

    response = verify(api, body["id"])

    assert response.status_code == 409
    assert response.json()["reason"] == reason
    assert words in response.json()["detail"] or reason == "wrong_token"
    assert "_mailqueue.example.com" in response.json()["detail"]
    assert SenderDomain.objects.get(pk=body["id"]).verified_at is None
    assert send(api, from_email="shop@example.com").status_code == 400


def test_a_dns_timeout_is_409_after_the_configured_time(api, dns_server, settings):
    """A nameserver that never answers: 409 `timeout` once MAILQUEUE_DNS_TIMEOUT_SECONDS pass."""
    settings.MAILQUEUE_DNS_TIMEOUT_SECONDS = 0.5
    body = register(api, "example.com")
    dns_server.silent.add("_mailqueue.example.com")

    started = time.monotonic()
    response = verify(api, body["id"])
    elapsed = time.monotonic() - started

    assert response.status_code == 409
    assert response.json()["reason"] == "timeout"
    assert "0.5 s" in response.json()["detail"]
    assert 0.4 < elapsed < 3
    assert dns_server.queries


def test_another_clients_token_does_not_verify(api, api_for, dns_server):
    """Two clients claim a domain: each verifies with its own token only."""
    mine = register(api, "example.com")
    globex = api_for("globex", ["send", "read"])
    theirs = register(globex, "example.com")
    assert mine["verification_token"] != theirs["verification_token"]
    dns_server.publish("_mailqueue.example.com", theirs["txt_record"]["value"])

    assert verify(globex, theirs["id"]).status_code == 200
    response = verify(api, mine["id"])

    assert response.status_code == 409
    assert response.json()["reason"] == "wrong_token"
    assert send(api, from_email="ceo@example.com").status_code == 400
    assert send(globex, from_email="ceo@example.com").status_code == 202


# --- Verifying by an operator -----------------------------------------------------------------


def test_an_operator_verifies_any_clients_domain_through_the_api(api, acme, api_for):
    """`admin` scope: register and verify a domain for a client by name, in one call."""
    operator = api_for("ops", ["admin"])

    response = operator.post(
        f"{DOMAINS}operator-verify/", {"client": "acme", "domain": "Example.com"}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert (response.json()["client"], response.json()["domain"]) == ("acme", "example.com")
    assert response.json()["verified_by"] == "operator"
    assert send(api, from_email="shop@example.com").status_code == 202
    assert SenderDomain.objects.get().client == acme


def test_operator_verification_needs_the_admin_scope_and_a_known_client(api, api_for):
    """A client cannot vouch for itself; an unknown client is 400 naming `client`."""
    body = {"client": "acme", "domain": "example.com"}
    assert api.post(f"{DOMAINS}operator-verify/", body, format="json").status_code == 403

    operator = api_for("ops", ["admin"])
    response = operator.post(
        f"{DOMAINS}operator-verify/", {**body, "client": "nobody"}, format="json"
    )

    assert response.status_code == 400
    assert "client" in response.json()
    assert not SenderDomain.objects.exists()


# --- Enforcement --------------------------------------------------------------------------------


def test_an_unverified_from_email_is_400_naming_the_field_and_domain(api, acme):
    """Nothing is stored; the message names the domain."""
    response = send(api, from_email="Shop <shop@example.com>")

    assert response.status_code == 400
    assert "example.com" in response.json()["from_email"][0]
    assert "not a verified sender domain" in response.json()["from_email"][0]
    assert not EmailJob.objects.exists()


def test_a_registered_but_unverified_domain_is_refused(api):
    """Registering is not verifying."""
    register(api, "example.com")

    assert send(api, from_email="shop@example.com").status_code == 400


def test_an_unverified_reply_to_is_400_naming_the_field(api, acme):
    """Every reply_to address counts, not only the first."""
    sender_domains_verify(acme, "example.com")

    response = send(
        api, from_email="shop@example.com", reply_to=["help@example.com", "x@elsewhere.test"]
    )

    assert response.status_code == 400
    assert "elsewhere.test" in response.json()["reply_to"][0]
    assert send(api, reply_to="help@example.com").status_code == 202


@pytest.mark.parametrize(
    ("verified", "address", "accepted"),
    [
        ("example.com", "Ada@EXAMPLE.COM", True),
        ("EXAMPLE.com", "ada@example.com", True),
        ("bücher.de", "info@BÜCHER.de", True),
        ("xn--bcher-kva.de", "info@bücher.de", True),
        ("bücher.de", "info@xn--bcher-kva.de", True),
        # Exact match: neither a subdomain nor a parent domain is covered.
        ("example.com", "ada@mail.example.com", False),
        ("mail.example.com", "ada@example.com", False),
        ("example.com", "ada@example.com.evil.test", False),
    ],
)
def test_domains_match_exactly_whatever_their_case_and_encoding(
    api, acme, verified, address, accepted
):
    """Case and IDN encoding do not matter; the domain must be one the client verified."""
    sender_domains_verify(acme, verified)

    response = send(api, from_email=address)

    assert response.status_code == (202 if accepted else 400), response.json()


def test_no_from_email_or_the_default_sender_is_always_allowed(api, settings):
    """DEFAULT_FROM_EMAIL is the operator's own sender."""
    settings.DEFAULT_FROM_EMAIL = "Mailqueue <noreply@mq.example>"

    assert send(api).status_code == 202
    assert send(api, from_email="noreply@mq.example").status_code == 202
    assert send(api, from_email="other@mq.example").status_code == 400


def test_one_client_cannot_send_as_another_clients_verified_domain(api, api_for):
    """globex verified example.com: acme's email from it is refused, globex's accepted."""
    globex = api_for("globex", ["send"])
    sender_domains_verify(Client.objects.get(name="globex"), "example.com")

    assert send(api, from_email="ceo@example.com").status_code == 400
    assert send(globex, from_email="ceo@example.com").status_code == 202


def test_batches_check_their_from_email(api, acme, welcome_template):
    """A batch from an unverified domain is 400 naming `from_email`, and stores nothing."""
    body = {
        "template": "welcome",
        "recipients": [{"to": "ada@example.net", "context": {"name": "Ada"}}],
        "from_email": "News <news@example.com>",
    }

    response = api.post("/api/v1/batches/", body, format="json")

    assert response.status_code == 400
    assert "example.com" in response.json()["from_email"][0]
    assert not Batch.objects.exists() and not EmailJob.objects.exists()
    sender_domains_verify(acme, "example.com")
    assert api.post("/api/v1/batches/", body, format="json").status_code == 202


def test_topic_emails_check_their_from_email(acme):
    """Every way in shares the check: a topic's email names the same field."""
    topic = topic_create(client=acme, slug="news", name="News", subject="News", text="Hi")
    subscriber = subscriber_subscribe(topic=topic, email="ada@example.net").subscriber

    with pytest.raises(ValidationFailed) as refused:
        topic_email_create(topic=topic, subscriber=subscriber, from_email="n@example.com")

    assert refused.value.field == "from_email"


def test_the_check_is_one_query_for_every_address(acme):
    """from_email and every reply_to are checked with one indexed query."""
    sender_domains_verify(acme, "example.com", "example.org")

    with CaptureQueriesContext(connection) as queries:
        sender_check(
            client=acme,
            from_email="a@example.com",
            reply_to=["b@example.org", "c@example.com", "d@EXAMPLE.ORG"],
        )

    assert len(queries) == 1
    assert "sender_domains" in queries[0]["sql"]


def test_enforcement_can_be_turned_off_for_a_single_tenant_install(api, settings):
    """MAILQUEUE_SENDER_DOMAINS_REQUIRED = False: any address is accepted."""
    settings.MAILQUEUE_SENDER_DOMAINS_REQUIRED = False

    assert send(api, from_email="anyone@anywhere.test", reply_to="x@y.test").status_code == 202


# --- Options ----------------------------------------------------------------------------------


def test_nameservers_option_takes_addresses_and_ports(settings):
    """`ip`, `ip:port`, `[ipv6]:port`; a hostname is a configuration error naming the setting."""
    settings.MAILQUEUE_DNS_NAMESERVERS = "192.0.2.1, 127.0.0.1:5353,[::1]:5300"
    assert conf.dns_nameservers() == [("192.0.2.1", 53), ("127.0.0.1", 5353), ("::1", 5300)]

    settings.MAILQUEUE_DNS_NAMESERVERS = ["dns.google"]
    with pytest.raises(ImproperlyConfigured, match="MAILQUEUE_DNS_NAMESERVERS"):
        conf.dns_nameservers()


# --- Upgrading ----------------------------------------------------------------------------------


def test_the_upgrade_registers_the_domains_existing_emails_use(acme, settings):
    """Migration 0015 runs this: each client's from_email and reply_to domains of its existing
    emails become verified by an operator, so no existing sender is refused after an upgrade."""
    globex = Client.objects.create(name="globex")
    # Emails accepted before sender domains existed (there was no check then).
    settings.MAILQUEUE_SENDER_DOMAINS_REQUIRED = False
    email_create(
        client=acme,
        to=["ada@example.net"],
        subject="s",
        text="t",
        from_email="Shop <Shop@Example.COM>",
        reply_to=["help@support.example.com", "info@bücher.de"],
    )
    email_create(client=acme, to=["b@example.net"], subject="s", text="t")
    for sender in ("g@globex.test", "h@globex.test"):
        email_create(client=globex, to=["c@example.net"], subject="s", text="t", from_email=sender)

    migration = importlib.import_module("mailqueue.migrations.0015_sender_domains")
    with connection.schema_editor(atomic=False) as editor:
        migration.register_domains_in_use(django_apps, editor)

    rows = {(row.client.name, row.domain, row.verified_by) for row in SenderDomain.objects.all()}
    assert rows == {
        ("acme", "example.com", "operator"),
        ("acme", "support.example.com", "operator"),
        ("acme", "xn--bcher-kva.de", "operator"),
        ("globex", "globex.test", "operator"),
    }
    assert not SenderDomain.objects.filter(verified_at__isnull=True).exists()
    assert sender_domains_backfill() == 0


def test_the_upgrade_keeps_what_a_client_registered(acme, settings):
    """A domain the client already registered (unverified) is left to its own verification."""
    settings.MAILQUEUE_SENDER_DOMAINS_REQUIRED = False
    email_create(
        client=acme, to=["a@example.net"], subject="s", text="t", from_email="a@example.com"
    )
    sender_domain_create(client=acme, domain="example.com")

    assert sender_domains_backfill() == 0
    assert SenderDomain.objects.get().verified_at is None


# --- Admin ------------------------------------------------------------------------------------


def test_admin_adds_a_domain_and_shows_the_txt_record(admin_client, acme):
    """The add form normalizes the domain; the page shows the record to publish."""
    response = admin_client.post(
        reverse("admin:mailqueue_senderdomain_add"), {"client": acme.pk, "domain": "Bücher.DE"}
    )
    assert response.status_code == 302
    created = SenderDomain.objects.get()
    assert created.domain == "xn--bcher-kva.de"

    page = admin_client.get(reverse("admin:mailqueue_senderdomain_change", args=[created.pk]))

    assert "_mailqueue.xn--bcher-kva.de" in page.content.decode()
    assert f"mailqueue-verification={created.verification_token}" in page.content.decode()
    listing = admin_client.get(reverse("admin:mailqueue_senderdomain_changelist"))
    assert "bücher.de" in listing.content.decode()


def test_admin_refuses_a_malformed_domain_on_its_field(admin_client, acme):
    """The service's reason shows on the form."""
    response = admin_client.post(
        reverse("admin:mailqueue_senderdomain_add"), {"client": acme.pk, "domain": "a@b.com"}
    )

    assert response.status_code == 200
    assert "not a valid domain name" in response.content.decode()
    assert not SenderDomain.objects.exists()


def test_admin_checks_dns_now_and_says_what_it_found(admin_client, acme, dns_server):
    """Check DNS now: the published one becomes verified, the other says why not."""
    good = sender_domain_create(client=acme, domain="example.com")
    bad = sender_domain_create(client=acme, domain="example.org")
    dns_server.publish(
        "_mailqueue.example.com", f"mailqueue-verification={good.verification_token}"
    )

    response = admin_client.post(
        reverse("admin:mailqueue_senderdomain_changelist"),
        {"action": "check_dns_now", "_selected_action": [good.pk, bad.pk]},
        follow=True,
    )

    text = response.content.decode()
    assert "Verified by its DNS TXT record: example.com (acme)." in text
    assert "Not verified: example.org (acme): _mailqueue.example.org does not exist" in text
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.verified_by, bad.verified_at) == ("dns", None)


def test_admin_marks_a_domain_verified_by_operator(admin_client, acme, api):
    """The operator vouches for a domain; its client sends from it at once."""
    pending = sender_domain_create(client=acme, domain="example.com")

    response = admin_client.post(
        reverse("admin:mailqueue_senderdomain_changelist"),
        {"action": "mark_verified_by_operator", "_selected_action": [pending.pk]},
        follow=True,
    )

    assert "1 sender domain(s) marked verified by an operator." in response.content.decode()
    pending.refresh_from_db()
    assert pending.verified_by == "operator" and pending.verified_at is not None
    assert send(api, from_email="shop@example.com").status_code == 202
