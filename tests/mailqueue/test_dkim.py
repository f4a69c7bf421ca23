"""DKIM: the smtp provider signs mail from domains with a key; the admin shows DNS records."""

import dkim as dkimpy
import pytest
from django.urls import reverse

from mailqueue import dkim
from mailqueue.models import DkimKey, EmailJob, EmailStatus
from mailqueue.services import email_create, emails_deliver
from mailqueue.services.dkim_keys import dkim_key_create
from tests.helpers import sender_domains_verify

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_keyring():
    """Each test starts from the keys it creates (the keyring is per process)."""
    dkim.keyring_refresh(force=True)
    yield
    DkimKey.objects.all().delete()
    dkim.keyring_refresh(force=True)


def dns_for(*keys: dkim.SigningKey):
    """A resolver answering the keys' DKIM TXT records, as dkimpy asks for them."""
    records = {}
    for key in keys:
        record = dkim.dns_records(key)[0]
        records[f"{record.name}.".encode()] = record.value.encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


def send(client, **fields) -> EmailJob:
    """Accept and deliver one email now; return it reloaded."""
    email = email_create(
        client=client, to=["ada@example.net"], subject="Hi", text="Hello", **fields
    )
    emails_deliver(email_ids=[str(email.pk)])
    email.refresh_from_db()
    return email


def test_mail_from_a_domain_with_a_key_is_signed_and_verifies(smtp_sink, issued_key):
    """The signature covers From, Subject, Date, Message-ID and both List-Unsubscribe headers,
    and verifies against the DKIM record the admin shows."""
    stored = dkim_key_create(domain="Example.COM", selector="s2026")
    sender_domains_verify(issued_key.api_key.client, "example.com")

    email = send(issued_key.api_key.client, from_email="Shop <shop@example.com>", topic="news")

    assert email.status == EmailStatus.SENT
    assert smtp_sink.messages[0].message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    raw = smtp_sink.messages[0].raw
    assert raw.startswith(b"DKIM-Signature:")
    signature = smtp_sink.messages[0].message["DKIM-Signature"]
    assert "d=example.com" in signature and "s=s2026" in signature
    signed = signature.split("h=")[1].split(";")[0].replace(" ", "").split(":")
    for header in ("from", "subject", "date", "message-id", "list-unsubscribe"):
        assert header in signed
    assert "list-unsubscribe-post" in signed
    key = dkim.SigningKey(stored.domain, stored.selector, stored.private_key.encode())
    assert dkimpy.verify(raw, dnsfunc=dns_for(key))
    tampered = raw.replace(b"Subject: Hi", b"Subject: Ho")
    assert not dkimpy.verify(tampered, dnsfunc=dns_for(key))


def test_keys_from_the_setting_sign_too(smtp_sink, issued_key, settings, tmp_path):
    """MAILQUEUE_DKIM_KEYS names a PEM file per domain."""
    pem = tmp_path / "example.org.pem"
    pem.write_text(dkim.private_key_generate())
    settings.MAILQUEUE_DKIM_KEYS = [f"example.org:mq:{pem}"]
    dkim.keyring_refresh(force=True)
    sender_domains_verify(issued_key.api_key.client, "example.org")

    send(issued_key.api_key.client, from_email="news@example.org")

    raw = smtp_sink.messages[0].raw
    key = dkim.SigningKey("example.org", "mq", pem.read_bytes())
    assert dkimpy.verify(raw, dnsfunc=dns_for(key))


def test_mail_from_a_domain_without_a_key_is_not_signed(smtp_sink, issued_key):
    """Only the sender's own domain's key signs."""
    dkim_key_create(domain="example.com")
    sender_domains_verify(issued_key.api_key.client, "elsewhere.test")

    send(issued_key.api_key.client, from_email="someone@elsewhere.test")

    assert b"DKIM-Signature" not in smtp_sink.messages[0].raw


def test_admin_generates_a_key_and_shows_its_dns_records(admin_client):
    """Adding a domain with no key generates one; its page shows the DKIM, SPF and DMARC
    records and never the private key."""
    response = admin_client.post(
        reverse("admin:mailqueue_dkimkey_add"),
        {"domain": "mail.example.com", "selector": "mq1", "private_key": ""},
    )
    assert response.status_code == 302
    stored = DkimKey.objects.get()
    assert stored.private_key.startswith("-----BEGIN PRIVATE KEY-----")

    page = admin_client.get(reverse("admin:mailqueue_dkimkey_change", args=[stored.pk]))
    html = page.content.decode()
    assert "mq1._domainkey.mail.example.com" in html
    assert "v=DKIM1; k=rsa; p=" in html
    assert "_dmarc.mail.example.com" in html and "v=spf1" in html
    assert "PRIVATE KEY" not in html


def test_admin_refuses_a_bad_key_on_its_field(admin_client):
    """A pasted key that is not an RSA PEM key is an error on the form, nothing stored."""
    response = admin_client.post(
        reverse("admin:mailqueue_dkimkey_add"),
        {"domain": "example.com", "selector": "mq", "private_key": "not a key"},
    )

    assert response.status_code == 200
    assert "Not an unencrypted PEM private key." in response.content.decode()
    assert not DkimKey.objects.exists()
