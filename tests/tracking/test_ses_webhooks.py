"""Amazon SES events through Amazon SNS: real signatures with a test certificate (served where
SNS keeps its own), the topic allow-list, subscription confirmation, and what SES events do."""

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mailqueue.models import Suppression
from tests.tracking.esp_payloads import BASIC_AUTH, WEBHOOK_SECRET, payload, post_json, sent_email
from tracking.models import TrackingEvent
from tracking.sns import sns_canonical_string

SES = "/webhooks/amazon_ses/tracking/"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
SES_MESSAGE_ID = "0100016c-ses-message-0001"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    """The private key of our stand-in for SNS's signing certificate."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def certificate_pem(signing_key) -> bytes:
    """A self-signed certificate for the signing key, as SNS serves its own."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(tz=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(signing_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def sns(settings, certificate_pem):
    """SNS's certificate host faked by `responses`; our topic allowed. Yields (mock, cert URL)."""
    settings.MAILQUEUE_SNS_TOPIC_ARNS = [TOPIC]
    settings.ANYMAIL = {}
    # A new URL per test: the certificate cache is per URL and per process.
    url = f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{uuid.uuid4().hex}.pem"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(url, body=certificate_pem)
        yield mock, url


def sign(message: dict, key: rsa.RSAPrivateKey, version: str = "1") -> dict:
    """The message with SNS's signature (v1: SHA1, v2: SHA256) over its canonical string."""
    message = {**message, "SignatureVersion": version}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(sns_canonical_string(message), padding.PKCS1v15(), algorithm)
    return {**message, "Signature": base64.b64encode(signature).decode()}


def notification(ses_fixture: str, cert_url: str, *, topic: str = TOPIC) -> dict:
    """An SNS Notification wrapping an SES event fixture."""
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": payload(ses_fixture),
        "Timestamp": "2026-03-01T17:10:41.000Z",
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&x=1",
    }


def sns_post(message: dict, **headers):
    """POST an SNS message with the headers SNS sends."""
    return post_json(
        SES,
        json.dumps(message),
        HTTP_X_AMZ_SNS_MESSAGE_TYPE=message.get("Type", ""),
        HTTP_X_AMZ_SNS_MESSAGE_ID=message.get("MessageId", ""),
        **headers,
    )


@pytest.fixture
def ses_email(issued_key):
    """An email SES accepted (two recipients), by SES's message id."""
    return sent_email(
        issued_key.api_key.client,
        message_id=SES_MESSAGE_ID,
        provider="amazon_ses",
        cc=["bob@example.com"],
    )


@pytest.mark.django_db
@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_permanent_bounce_is_stored_per_recipient_and_suppresses(
    sns, signing_key, ses_email, version
):
    """A verified SNS notification of a Permanent bounce to two recipients: two events linked
    by SES's message id, two service-wide suppressions, bounced_at set."""
    _mock, cert_url = sns
    message = sign(notification("ses_bounce_permanent.json", cert_url), signing_key, version)

    response = sns_post(message)

    assert response.status_code == 200
    events = TrackingEvent.objects.filter(esp="amazon_ses").order_by("recipient")
    assert [(e.recipient, e.event_type, e.email_id) for e in events] == [
        ("ada@example.com", "bounced", ses_email.pk),
        ("bob@example.com", "bounced", ses_email.pk),
    ]
    assert events[0].mta_response == "smtp; 550 5.1.1 user unknown"
    assert events[0].description == "Permanent: General"
    assert events[0].event_key == f"{message['MessageId']}:ada@example.com"
    assert events[0].raw["bounce"]["bounceType"] == "Permanent"
    suppressed = dict(Suppression.objects.values_list("address", "reason"))
    assert suppressed == {"ada@example.com": "hard_bounce", "bob@example.com": "hard_bounce"}
    ses_email.refresh_from_db()
    assert ses_email.bounced_at == datetime(2026, 3, 1, 17, 10, 41, tzinfo=UTC)


@pytest.mark.django_db
def test_delivery_complaint_and_transient_bounce(sns, signing_key, ses_email):
    """Delivery sets delivered_at; a complaint suppresses; a transient bounce does not."""
    _mock, cert_url = sns

    for fixture in ("ses_delivery.json", "ses_bounce_transient.json", "ses_complaint.json"):
        assert sns_post(sign(notification(fixture, cert_url), signing_key)).status_code == 200

    types = set(TrackingEvent.objects.values_list("event_type", flat=True))
    assert types == {"delivered", "bounced", "complained"}
    delivered = TrackingEvent.objects.get(event_type="delivered")
    assert delivered.mta_response == "250 2.6.0 Message received"
    assert dict(Suppression.objects.values_list("address", "reason")) == {
        "ada@example.com": "complaint"
    }
    ses_email.refresh_from_db()
    assert ses_email.delivered_at is not None
    assert ses_email.complained_at is not None


@pytest.mark.django_db
def test_replayed_notification_writes_nothing_new_and_the_certificate_is_fetched_once(
    sns, signing_key, ses_email
):
    """SNS redelivers: stored once. The certificate is loaded once per process."""
    mock, cert_url = sns
    message = sign(notification("ses_bounce_permanent.json", cert_url), signing_key)

    for _ in range(3):
        assert sns_post(message).status_code == 200

    assert TrackingEvent.objects.count() == 2
    assert Suppression.objects.count() == 2
    assert len([c for c in mock.calls if c.request.url == cert_url]) == 1


@pytest.mark.django_db
def test_forged_signature_writes_nothing(sns, signing_key, ses_email):
    """A notification altered after signing (or signed by another key): 400, nothing stored."""
    _mock, cert_url = sns
    message = sign(notification("ses_delivery.json", cert_url), signing_key)
    tampered = {**message, "Message": payload("ses_bounce_permanent.json")}
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign = sign(notification("ses_bounce_permanent.json", cert_url), other_key)
    unsigned = {**notification("ses_bounce_permanent.json", cert_url), "SignatureVersion": "1"}

    for message in (tampered, foreign, unsigned):
        assert sns_post(message).status_code == 400

    assert not TrackingEvent.objects.exists()
    assert not Suppression.objects.exists()
    ses_email.refresh_from_db()
    assert ses_email.bounced_at is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "cert_url",
    [
        "https://sns.us-east-1.amazonaws.com.evil.test/cert.pem",
        "https://evil.test/sns.us-east-1.amazonaws.com/cert.pem",
        "http://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
        "https://user@sns.us-east-1.amazonaws.com/cert.pem",
        "https://s3.amazonaws.com/cert.pem",
    ],
)
def test_certificate_from_anywhere_but_sns_is_refused_without_fetching_it(
    sns, signing_key, ses_email, cert_url
):
    """The signature would check against an attacker's certificate: it is never even loaded."""
    mock, _url = sns
    message = sign(notification("ses_bounce_permanent.json", cert_url), signing_key)

    assert sns_post(message).status_code == 400

    assert len(mock.calls) == 0
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("allowed", [[], ["arn:aws:sns:us-east-1:123456789012:other"]])
def test_genuine_message_from_a_topic_not_allowed_is_403(
    sns, signing_key, ses_email, settings, allowed
):
    """Anyone can create a topic and point it here: only MAILQUEUE_SNS_TOPIC_ARNS count (an
    empty list refuses all)."""
    settings.MAILQUEUE_SNS_TOPIC_ARNS = allowed
    _mock, cert_url = sns
    message = sign(notification("ses_bounce_permanent.json", cert_url), signing_key)

    assert sns_post(message).status_code == 403
    assert not TrackingEvent.objects.exists()
    assert not Suppression.objects.exists()


def confirmation(cert_url: str, subscribe_url: str) -> dict:
    """An SNS SubscriptionConfirmation for our topic."""
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": "2336412f37fb687f5d51e6e2425c464de257a6d6",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2026-03-01T17:00:00.000Z",
        "SigningCertURL": cert_url,
    }


SUBSCRIBE_URL = (
    "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
    f"&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e2425c464de257a6d6"
)


@pytest.mark.django_db
def test_verified_subscription_is_confirmed(sns, signing_key):
    """A signed confirmation for an allowed topic: its SubscribeURL is loaded."""
    mock, cert_url = sns
    confirm = mock.get(SUBSCRIBE_URL, body="<ConfirmSubscriptionResponse/>")

    response = sns_post(sign(confirmation(cert_url, SUBSCRIBE_URL), signing_key))

    assert response.status_code == 200
    assert confirm.call_count == 1
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["forged", "foreign-subscribe-url", "topic-not-allowed"])
def test_unverified_subscription_is_not_confirmed(sns, signing_key, settings, case):
    """Forged, pointing elsewhere, or another topic: refused, and no URL is loaded."""
    mock, cert_url = sns
    subscribe_url = SUBSCRIBE_URL
    if case == "foreign-subscribe-url":
        subscribe_url = "https://evil.test/?Action=ConfirmSubscription"
    if case == "topic-not-allowed":
        settings.MAILQUEUE_SNS_TOPIC_ARNS = []
    message = sign(confirmation(cert_url, subscribe_url), signing_key)
    if case == "forged":
        message["Token"] = "another-token"

    response = sns_post(message)

    assert response.status_code in {400, 403}
    assert [c.request.url for c in mock.calls if c.request.url != cert_url] == []


@pytest.mark.django_db
def test_basic_auth_asked_for_then_required(sns, signing_key, ses_email, settings):
    """With WEBHOOK_SECRET set, SNS is first answered 401 (it then sends credentials); wrong
    credentials are 400; the right ones are stored."""
    settings.ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_SECRET}
    _mock, cert_url = sns
    message = sign(notification("ses_delivery.json", cert_url), signing_key)

    first = sns_post(message)
    wrong = sns_post(message, HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"a:b").decode())
    right = sns_post(message, HTTP_AUTHORIZATION=BASIC_AUTH)

    assert first.status_code == 401
    assert first["WWW-Authenticate"].startswith("Basic")
    assert wrong.status_code == 400
    assert right.status_code == 200
    assert TrackingEvent.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["{not json", "[]", "null"])
def test_body_that_is_not_an_sns_message_is_400(sns, body):
    """Not a JSON object: 400 before anything else."""
    response = post_json(SES, body, HTTP_X_AMZ_SNS_MESSAGE_TYPE="Notification")

    assert response.status_code == 400
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db
def test_unknown_sns_message_type_is_400_not_500(sns, ses_email):
    """Header and body agree on a Type SNS never sends (anymail raises its own error): 400,
    nothing stored, no certificate fetched."""
    mock, cert_url = sns
    message = {**notification("ses_bounce_permanent.json", cert_url), "Type": "Bogus"}

    response = sns_post(message)

    assert response.status_code == 400
    assert len(mock.calls) == 0
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("allowed", [[], ["arn:aws:sns:us-east-1:123456789012:other"]])
def test_topic_not_allowed_is_refused_before_any_certificate_is_fetched(
    sns, signing_key, settings, allowed
):
    """An unauthenticated POST naming a foreign topic cannot make the server load a URL: 403
    first. The certificate URL is not even registered with `responses`, so a fetch would
    fail the request with a 400 and show in the calls."""
    settings.MAILQUEUE_SNS_TOPIC_ARNS = allowed
    mock, _url = sns
    unregistered = (
        f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{uuid.uuid4().hex}.pem"
    )
    message = sign(notification("ses_bounce_permanent.json", unregistered), signing_key)

    assert sns_post(message).status_code == 403

    assert len(mock.calls) == 0
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/cert.pem",
        "/evil/SimpleNotificationService-0123abcd.pem",
        "/SimpleNotificationService-0123abcd.pem/../cert.pem",
        "/SimpleNotificationService-0123ABCD.pem",
        "/SimpleNotificationService-.pem",
        "/SimpleNotificationService-0123abcd.pem?x=1",
        "/?Action=GetCertificate&x=.pem",
    ],
)
def test_lookalike_certificate_path_on_an_sns_host_is_refused(
    sns, signing_key, certificate_pem, ses_email, path
):
    """Only AWS's `/SimpleNotificationService-<hex>.pem` is loaded: another file on an SNS
    host is refused unfetched, even where it would serve a certificate that matches."""
    mock, _url = sns
    lookalike = f"https://sns.us-east-1.amazonaws.com{path}"
    mock.get(lookalike, body=certificate_pem)
    message = sign(notification("ses_bounce_permanent.json", lookalike), signing_key)

    assert sns_post(message).status_code == 400

    assert len(mock.calls) == 0
    assert not TrackingEvent.objects.exists()
