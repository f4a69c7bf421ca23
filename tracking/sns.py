"""Amazon SNS message authentication, which anymail leaves to us: the topic is one we subscribed
to, the signing certificate comes from an SNS host over https under AWS's file name, and the
signature covers the canonical string AWS documents.

https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
"""

import base64
import binascii
import re
import threading
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.core.exceptions import PermissionDenied, SuspiciousOperation

from mailqueue import conf

# Where SNS keeps its signing certificates and subscription endpoints: sns.<region>.amazonaws.com
# (.com.cn in China). A lookalike host such as sns.evil.com or sns.us-east-1.amazonaws.com.evil.io
# does not match.
SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
# The path of an SNS signing certificate, as AWS names them; any other file on an SNS host
# (anything a query string or a lookalike path could reach) is not loaded.
SNS_CERTIFICATE_PATH = re.compile(r"/SimpleNotificationService-[0-9a-f]+\.pem")

# The fields each message type signs, in the order AWS documents (already sorted by name).
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}

# Signing certificates by URL: SNS uses a handful, so each is fetched once per process.
_certificates: dict[str, rsa.RSAPublicKey] = {}
_certificates_lock = threading.Lock()
_MAX_CERTIFICATES = 32


class SnsVerificationError(SuspiciousOperation):
    """The request does not prove it comes from Amazon SNS (answered 400)."""


class SnsTopicNotAllowed(PermissionDenied):
    """An SNS message for a topic that is not in MAILQUEUE_SNS_TOPIC_ARNS (answered 403, before
    its signature is checked: nothing is fetched for it)."""


def is_sns_url(url: object) -> bool:
    """Whether `url` is an https URL on an SNS host (no port, no credentials)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and port is None
        and not parts.username
        and not parts.password
        and SNS_HOST.match(parts.hostname or "") is not None
    )


def is_sns_certificate_url(url: object) -> bool:
    """Whether `url` is where SNS keeps a signing certificate: an SNS host, AWS's file name."""
    if not is_sns_url(url):
        return False
    parts = urlsplit(url)
    return (
        not parts.query
        and not parts.fragment
        and SNS_CERTIFICATE_PATH.fullmatch(parts.path) is not None
    )


def sns_canonical_string(message: dict) -> bytes:
    """The bytes SNS signed for this message: each signed field's name and value on lines."""
    fields = _SIGNED_FIELDS.get(message.get("Type"))
    if fields is None:
        raise SnsVerificationError("Unknown SNS message Type.")
    lines = []
    for name in fields:
        value = message.get(name)
        if value is None:
            if name == "Subject":  # the only optional signed field
                continue
            raise SnsVerificationError(f"SNS message has no {name}.")
        if not isinstance(value, str):
            raise SnsVerificationError(f"SNS message field {name} is not a string.")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode("utf-8")


def _signing_key(url: str) -> rsa.RSAPublicKey:
    """The public key of the certificate at `url`, fetched once per process."""
    with _certificates_lock:
        key = _certificates.get(url)
    if key is not None:
        return key
    try:
        response = requests.get(url, timeout=5, allow_redirects=False)
        response.raise_for_status()
        key = x509.load_pem_x509_certificate(response.content).public_key()
    except (requests.RequestException, ValueError) as exc:
        # Not the sender's fault alone, but never trust a message we could not check: SNS
        # retries a 400 for a while, by which time a passing outage has ended.
        raise SnsVerificationError("SNS signing certificate could not be loaded.") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsVerificationError("SNS signing certificate is not an RSA certificate.")
    with _certificates_lock:
        if len(_certificates) >= _MAX_CERTIFICATES:
            _certificates.clear()
        _certificates[url] = key
    return key


def sns_message_verify(message: dict) -> None:
    """Raise SnsTopicNotAllowed unless the message's topic is in MAILQUEUE_SNS_TOPIC_ARNS, and
    SnsVerificationError unless Amazon SNS signed `message`.

    Everything the message itself shows is checked before the certificate is fetched, so an
    unauthenticated request cannot make this server load a URL of its choosing.
    """
    canonical = sns_canonical_string(message)  # the message's shape: its Type and fields
    # Anyone may create a topic, so a genuine signature alone proves nothing about who sends;
    # an empty allow-list refuses every topic.
    if message.get("TopicArn") not in conf.sns_topic_arns():
        raise SnsTopicNotAllowed("This SNS topic is not in MAILQUEUE_SNS_TOPIC_ARNS.")
    certificate_url = message.get("SigningCertURL") or message.get("SigningCertUrl")
    if not is_sns_certificate_url(certificate_url):
        raise SnsVerificationError("SigningCertURL is not an Amazon SNS certificate URL.")
    algorithm = _HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise SnsVerificationError("SignatureVersion must be 1 or 2.")
    try:
        signature = base64.b64decode(message.get("Signature") or "", validate=True)
    except (binascii.Error, TypeError) as exc:
        raise SnsVerificationError("Signature is not base64.") from exc
    key = _signing_key(certificate_url)
    try:
        key.verify(signature, canonical, padding.PKCS1v15(), algorithm())
    except InvalidSignature as exc:
        raise SnsVerificationError("SNS signature does not match.") from exc


def sns_subscription_confirm(message: dict) -> None:
    """Confirm a verified SubscriptionConfirmation by loading its SubscribeURL."""
    url = message.get("SubscribeURL")
    if not is_sns_url(url):
        raise SnsVerificationError("SubscribeURL is not an Amazon SNS URL.")
    # A failure raises: the 5xx makes SNS send the confirmation again.
    requests.get(url, timeout=10, allow_redirects=False).raise_for_status()
