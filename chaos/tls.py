"""A private Redis that speaks only TLS and wants a password, with a CA made on the spot.

For tests of rediss:// URLs: `tls_redis(password=...)` makes a self-signed CA and a server
certificate for 127.0.0.1/localhost signed by it (with `cryptography`), and starts
`redis-server` with its plain port closed and its TLS port on a free port.
"""

import datetime
import ipaddress
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chaos.services import PrivateRedis, free_port


@dataclass(frozen=True)
class Certificates:
    """Paths of a CA certificate and of a server certificate and key it signed."""

    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def certificates_make(directory: Path) -> Certificates:
    """A new CA and a server certificate for 127.0.0.1 and localhost, valid for a day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Mailqueue test CA"))
        .issuer_name(_name("Mailqueue test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(
        ca=directory / "ca.pem", cert=directory / "redis.pem", key=directory / "redis.key"
    )
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.key, key)
    return paths


def tls_server_arguments(certificates: Certificates) -> list[str]:
    """redis-server options that serve TLS with these certificates (clients need no cert)."""
    return [
        "--tls-cert-file", str(certificates.cert),
        "--tls-key-file", str(certificates.key),
        "--tls-ca-cert-file", str(certificates.ca),
        "--tls-auth-clients", "no",
    ]  # fmt: skip


class TlsRedis(PrivateRedis):
    """A PrivateRedis whose only port speaks TLS; `url` is the rediss:// URL a client uses."""

    def __init__(
        self,
        directory: Path,
        *,
        certificates: Certificates,
        password: str,
        acl_user: tuple[str, str] | None = None,
    ) -> None:
        port = free_port()
        # The last --port wins: the plain port is closed, the TLS one takes the free port.
        extra = [
            "--tls-port", str(port), "--port", "0",
            *tls_server_arguments(certificates),
            "--requirepass", password,
        ]  # fmt: skip
        if acl_user is not None:
            # An ACL user (Redis 6+) besides the default user's requirepass.
            name, secret = acl_user
            extra += ["--user", name, "on", f">{secret}", "~*", "&*", "+@all"]
        super().__init__(directory, port=port, extra=extra)
        self.certificates = certificates
        self.password = password

    def url_with(self, password: str, *, db: int = 0, user: str = "") -> str:
        """rediss:// URL of a DB with this password (and ACL user), trusting the test CA."""
        return (
            f"rediss://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/"
            f"{db}?ssl_ca_certs={quote(str(self.certificates.ca))}"
        )

    @property
    def url(self) -> str:
        """rediss:// URL of DB 0 with the right password."""
        return self.url_with(self.password)


@contextmanager
def tls_redis(*, password: str, acl_user: tuple[str, str] | None = None) -> Iterator[TlsRedis]:
    """A running TLS-only, password-protected private Redis (with an ACL user when given),
    killed and removed on the way out."""
    directory = Path(tempfile.mkdtemp(prefix="mailqueue-redis-tls-"))
    server = TlsRedis(
        directory,
        certificates=certificates_make(directory),
        password=password,
        acl_user=acl_user,
    )
    try:
        server.start()
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
        shutil.rmtree(directory, ignore_errors=True)
