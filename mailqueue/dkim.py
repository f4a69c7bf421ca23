"""DKIM: signing outgoing SMTP messages per sender domain, and the DNS records a domain needs.

Keys come from MAILQUEUE_DKIM_KEYS (`domain:selector:/path/to/key.pem`, comma-separated) and
from the admin (`DkimKey`). A worker loads them in its main thread, at most once a minute
(`keyring_refresh`), because send threads never touch the database; the `smtp` provider then
signs with `sign`. RFC 8058 requires List-Unsubscribe and List-Unsubscribe-Post to be signed.
"""

import base64
import threading
import time
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from django.core.exceptions import ImproperlyConfigured

from mailqueue import conf

# Headers covered by the signature (a listed header that is absent is signed as absent, so it
# cannot be added later).
SIGNED_HEADERS = [
    b"from",
    b"to",
    b"cc",
    b"reply-to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
]
REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class SigningKey:
    """What signs one domain's mail."""

    domain: str
    selector: str
    private_key: bytes


_keyring: dict[str, SigningKey] = {}
_loaded_at = float("-inf")
_lock = threading.Lock()
# OpenSSL's copy of each loaded key, by modulus (see _rsa_sign).
_openssl_keys: dict[int, rsa.RSAPrivateKey] = {}
_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_dkimpy_rsa_sign = dkim.RSASSA_PKCS1_v1_5_sign


def _rsa_sign(digest: dkim.HashThrough, private_key: dict) -> bytes:
    """dkimpy's RSA signing step, done by OpenSSL for keys we loaded.

    dkimpy signs in pure Python without the Chinese remainder theorem: 7 ms of CPU per message
    for a 2048-bit key, more than everything else a worker does per email. It still does the
    canonicalization and builds the header; only the RSA operation (the same PKCS#1 v1.5
    signature) moves to OpenSSL, well under 1 ms.
    """
    key = _openssl_keys.get(private_key["modulus"])
    if key is None or digest.name not in _HASHES:
        return _dkimpy_rsa_sign(digest, private_key)
    algorithm = Prehashed(_HASHES[digest.name]())
    return key.sign(digest.digest(), padding.PKCS1v15(), algorithm)


dkim.RSASSA_PKCS1_v1_5_sign = _rsa_sign


def keyring_refresh(*, force: bool = False) -> None:
    """Reload the keys (settings, then the admin's) if they are older than a minute."""
    global _keyring, _loaded_at
    if not force and time.monotonic() - _loaded_at < REFRESH_SECONDS:
        return
    from mailqueue.models import DkimKey

    keys = {
        key.domain.lower(): SigningKey(key.domain.lower(), key.selector, key.private_key.encode())
        for key in DkimKey.objects.all()
    }
    keys.update({key.domain: key for key in configured_keys()})
    for key in keys.values():
        loaded = serialization.load_pem_private_key(key.private_key, password=None)
        if isinstance(loaded, rsa.RSAPrivateKey):
            _openssl_keys[loaded.private_numbers().public_numbers.n] = loaded
    with _lock:
        _keyring, _loaded_at = keys, time.monotonic()


def configured_keys() -> list[SigningKey]:
    """The keys of MAILQUEUE_DKIM_KEYS, read from their files."""
    keys = []
    for entry in conf.dkim_keys():
        try:
            domain, selector, path = entry.split(":", 2)
            with open(path, "rb") as handle:
                pem = handle.read()
        except (ValueError, OSError) as exc:
            raise ImproperlyConfigured(
                f"MAILQUEUE_DKIM_KEYS entry {entry!r} is not domain:selector:/path/to/key.pem "
                f"with a readable file: {exc}"
            ) from exc
        keys.append(SigningKey(domain.strip().lower(), selector.strip(), pem))
    return keys


def sign(message: bytes, from_address: str) -> bytes:
    """The message with a DKIM-Signature header when its sender's domain has a key."""
    domain = from_address.rpartition("@")[2].lower()
    key = _keyring.get(domain)
    if key is None:
        return message
    signature = dkim.sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        key.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=SIGNED_HEADERS,
        linesep=b"\r\n",
    )
    return signature + message


def private_key_generate() -> str:
    """A new 2048-bit RSA private key, PEM (PKCS#8)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass(frozen=True)
class DnsRecord:
    """One TXT record to publish."""

    name: str
    value: str
    purpose: str


def dns_records(key: SigningKey) -> list[DnsRecord]:
    """The DKIM record of a key, and the SPF and DMARC records its domain needs."""
    private = serialization.load_pem_private_key(key.private_key, password=None)
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return [
        DnsRecord(
            f"{key.selector}._domainkey.{key.domain}",
            f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}",
            "DKIM: receivers check the signature with this public key.",
        ),
        DnsRecord(
            key.domain,
            "v=spf1 a mx ip4:<your SMTP relay's address> ~all",
            "SPF: the hosts allowed to send for the domain (adapt to your relay or ESP).",
        ),
        DnsRecord(
            f"_dmarc.{key.domain}",
            f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{key.domain}",
            "DMARC: start with p=none and reports, then tighten to quarantine or reject.",
        ),
    ]
