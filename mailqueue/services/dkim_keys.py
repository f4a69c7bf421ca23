"""DKIM keys kept in the admin."""

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailqueue import dkim
from mailqueue.errors import ValidationFailed
from mailqueue.models import DkimKey


def dkim_key_check(*, domain: str, private_key: str) -> tuple[str, str]:
    """The normalized domain and the PEM key (generated when empty), or ValidationFailed."""
    domain = domain.strip().lower().rstrip(".")
    if not domain or "." not in domain:
        raise ValidationFailed("Give the sender domain, e.g. example.com.", field="domain")
    pem = private_key.strip() or dkim.private_key_generate()
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValidationFailed("Not an unencrypted PEM private key.", field="private_key") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
        raise ValidationFailed("DKIM needs an RSA key of at least 1024 bits.", field="private_key")
    return domain, pem


def dkim_key_create(*, domain: str, selector: str = "mailqueue", private_key: str = "") -> DkimKey:
    """Store a domain's DKIM key; a new 2048-bit RSA key when none is given."""
    domain, pem = dkim_key_check(domain=domain, private_key=private_key)
    created = DkimKey.objects.create(domain=domain, selector=selector.strip(), private_key=pem)
    dkim.keyring_refresh(force=True)
    return created
