"""Where a webhook may be sent: https to a public address only (no SSRF).

A URL is checked when it is registered and again at every delivery, against the addresses its
host resolves to at that moment; the delivery then connects to the address that was checked (not
to the name, which could resolve elsewhere a second time: DNS rebinding), sending the name as the
Host header and TLS SNI. MAILQUEUE_WEBHOOK_ALLOW_PRIVATE lifts both rules for development and
tests.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from client_webhooks.errors import UnsafeWebhookUrl

MAX_URL_LENGTH = 2000
# Cloud metadata services; link-local and private ranges cover them, named here to be sure.
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class WebhookTarget:
    """A checked URL: its parts, and the address to connect to."""

    scheme: str
    host: str
    port: int
    # Path and query, as sent in the request line.
    target: str
    address: str

    @property
    def host_header(self) -> str:
        """The Host header: the name, with the port only when it is not the scheme's default."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


# IPv6 ranges that carry an IPv4 address the packets go on to (or that nobody serves webhooks
# from). Each is judged by the IPv4 address inside it, or refused outright.
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
# Local-use NAT64 (RFC 8215) and Teredo: refused whatever they wrap.
REFUSED_TUNNELS = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("2001::/32"))


def address_is_public(address: IPAddress) -> bool:
    """Whether an address is a public unicast one (not loopback, private, link-local, multicast,
    reserved, unspecified, shared or metadata), nor an IPv6 one that wraps an IPv4 address
    which is not (IPv4-mapped, 6to4, NAT64) or that tunnels (Teredo, local-use NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in REFUSED_TUNNELS):
            return False
        # A gateway or the host's own stack turns these into packets to the IPv4 address
        # inside, so `2002:7f00:1::` reaches 127.0.0.1 as surely as `::ffff:127.0.0.1`.
        wrapped = address.ipv4_mapped or address.sixtofour
        if wrapped is None and address in NAT64_WELL_KNOWN:
            wrapped = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if wrapped is not None:
            return address_is_public(wrapped)
    return not (
        address in METADATA_ADDRESSES
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def url_parse(url: str, *, allow_private: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path and query) of an acceptable URL; UnsafeWebhookUrl if not."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"At most {MAX_URL_LENGTH} characters.", field="url")
    if any(ord(char) <= 32 or ord(char) == 127 for char in url):
        raise UnsafeWebhookUrl("A URL has no spaces or control characters.", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookUrl(f"Not a valid URL: {exc}.", field="url") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise UnsafeWebhookUrl("The URL must start with https://.", field="url")
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhookUrl("The URL must not carry a user name or password.", field="url")
    if parts.fragment:
        raise UnsafeWebhookUrl("The URL must not have a #fragment.", field="url")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeWebhookUrl("The URL has no host.", field="url")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeWebhookUrl("The URL's host is not a valid name.", field="url") from None
    port = port or (443 if parts.scheme == "https" else 80)
    if port == 0:
        raise UnsafeWebhookUrl("The URL's port must be between 1 and 65535.", field="url")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, target


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to (itself, for an IP literal)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeWebhookUrl(f"The host {host} does not resolve.", field="url") from None
    # Drop an IPv6 scope (`fe80::1%eth0`): the address itself decides.
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def webhook_target(url: str, *, allow_private: bool, resolve: bool = True) -> WebhookTarget:
    """The checked target of a webhook URL; UnsafeWebhookUrl when it is malformed, not https or
    any address its host resolves to is not public (both allowed with `allow_private`).

    Without `resolve` (registration with `allow_private`, where any address is fine) the name
    is not looked up and `address` is the host itself.
    """
    scheme, host, port, target = url_parse(url, allow_private=allow_private)
    if not resolve:
        return WebhookTarget(scheme, host, port, target, host)
    addresses = _resolve(host, port)
    if not allow_private:
        # Every address, not just the first: a name with one public and one private record
        # could otherwise be used to reach the private one.
        refused = [address for address in addresses if not address_is_public(address)]
        if refused:
            raise UnsafeWebhookUrl(
                f"The host resolves to {refused[0]}, a private, loopback, link-local or "
                "reserved address; webhooks go to public addresses only.",
                field="url",
            )
    if not addresses:
        raise UnsafeWebhookUrl(f"The host {host} does not resolve.", field="url")
    return WebhookTarget(scheme, host, port, target, str(addresses[0]))
