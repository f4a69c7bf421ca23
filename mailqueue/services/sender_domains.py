"""Sender domains: the domains a client may send from, their verification (a DNS TXT record or
an operator), and `sender_check`, which every way of creating an email calls.

A client proves it controls a domain by publishing, at `_mailqueue.<domain>`, the TXT record
`mailqueue-verification=<token>` with its own token: a record under its own label leaves the
domain's apex TXT records (SPF, other services' tokens) alone, as `_dmarc` and
`_acme-challenge` do. A from_email or reply_to address is allowed when its domain is exactly one
of the client's verified domains: a subdomain is not covered (verify it too), so verifying
`example.com` never lets a client send as `billing.example.com` run by someone else.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
from django.db import IntegrityError, connections, models, transaction
from django.utils import timezone
from django.utils.encoding import punycode

from mailqueue import conf
from mailqueue.errors import MailqueueError, ValidationFailed
from mailqueue.models import Client, EmailJob, SenderDomain
from mailqueue.selectors.sender_domains import sender_domains_verified
from mailqueue.validation import address_spec

# Where and what a client publishes to prove it controls a domain.
RECORD_LABEL = "_mailqueue"
TXT_PREFIX = "mailqueue-verification="

# One DNS label of a hostname (letters, digits, hyphens; not starting or ending with a hyphen).
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class SenderDomainTaken(MailqueueError):
    """The client already registered this domain (HTTP 409)."""

    status_code = 409


class SenderDomainNotVerified(MailqueueError):
    """A DNS verification found no matching TXT record, or DNS did not answer (HTTP 409).

    `reason` says which: `nxdomain`, `no_txt`, `wrong_token`, `timeout` or `dns_error`.
    """

    status_code = 409

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def as_dict(self) -> dict:
        """`detail` and the machine-readable `reason`."""
        return {"detail": self.message, "reason": self.reason}


@dataclass(frozen=True)
class TxtRecord:
    """The DNS record a client publishes to verify a domain."""

    name: str
    value: str


def domain_normalize(value: object, *, field: str = "domain") -> str:
    """A hostname as stored: lowercase ASCII (IDNA punycode), no trailing dot; ValidationFailed
    naming `field` when it is not one."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("Must be a domain name such as example.com.", field=field)
    text = value.strip().rstrip(".").lower()
    try:
        # The same encoding Django's validate_email checks an address's domain with.
        ascii_domain = punycode(text).lower() if not text.isascii() else text
    except UnicodeError:
        raise ValidationFailed(f"'{value}' is not a valid domain name.", field=field) from None
    labels = ascii_domain.split(".")
    if (
        # As in email addresses (Django's validate_email): a dotted name, or localhost.
        (len(labels) < 2 and ascii_domain != "localhost")
        or len(ascii_domain) > 253
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
        or not all(_punycode_valid(label) for label in labels if label.startswith("xn--"))
    ):
        raise ValidationFailed(
            f"'{value}' is not a valid domain name (a hostname such as example.com; no "
            "address, URL, IP address or wildcard).",
            field=field,
        )
    return ascii_domain


def _punycode_valid(label: str) -> bool:
    """Whether an `xn--` label decodes (an invalid one names no domain anyone can own)."""
    try:
        label.encode("ascii").decode("idna")
    except UnicodeError:
        return False
    return True


def domain_unicode(domain: str) -> str:
    """A stored domain as people write it (punycode labels decoded)."""
    try:
        return domain.encode("ascii").decode("idna")
    except UnicodeError:
        return domain


def sender_domain_txt_record(*, sender_domain: SenderDomain) -> TxtRecord:
    """The TXT record that verifies this client's claim on its domain."""
    return TxtRecord(
        name=f"{RECORD_LABEL}.{sender_domain.domain}",
        value=f"{TXT_PREFIX}{sender_domain.verification_token}",
    )


def sender_domain_create(*, client: Client, domain: str) -> SenderDomain:
    """Register a domain for a client, unverified, with a new token; SenderDomainTaken (409)
    when the client registered it before."""
    ascii_domain = domain_normalize(domain)
    try:
        with transaction.atomic():
            return SenderDomain.objects.create(client=client, domain=ascii_domain)
    except IntegrityError:
        raise SenderDomainTaken(
            f"'{ascii_domain}' is already one of this client's sender domains.", field="domain"
        ) from None


def sender_domain_delete(*, sender_domain: SenderDomain) -> None:
    """Remove a domain: the client can no longer send from it."""
    sender_domain.delete()


def _mark_verified(sender_domain: SenderDomain, verified_by: str) -> SenderDomain:
    now = timezone.now()
    SenderDomain.objects.filter(pk=sender_domain.pk).update(
        verified_at=now, verified_by=verified_by
    )
    sender_domain.verified_at, sender_domain.verified_by = now, verified_by
    return sender_domain


def sender_domain_verify_operator(*, sender_domain: SenderDomain) -> SenderDomain:
    """Mark a domain verified by an operator (who checked ownership some other way)."""
    return _mark_verified(sender_domain, SenderDomain.VerifiedBy.OPERATOR)


def sender_domain_register_verified(*, client: Client, domain: str) -> SenderDomain:
    """Register a domain for a client if needed and mark it verified by an operator."""
    ascii_domain = domain_normalize(domain)
    sender_domain, _ = SenderDomain.objects.get_or_create(client=client, domain=ascii_domain)
    return sender_domain_verify_operator(sender_domain=sender_domain)


def _resolver() -> dns.resolver.Resolver:
    """A resolver with the configured nameservers (or the system's) and timeout."""
    servers = conf.dns_nameservers()
    resolver = dns.resolver.Resolver(configure=not servers)
    if servers:
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(address, port) for address, port in servers
        ]
    resolver.lifetime = resolver.timeout = conf.dns_timeout_seconds()
    return resolver


def _txt_values(name: str) -> list[str]:
    """The TXT strings published at a name (each record's strings joined, as they are meant);
    SenderDomainNotVerified when there are none or DNS does not answer."""
    try:
        answer = _resolver().resolve(dns.name.from_text(name), "TXT", search=False)
    except dns.resolver.NXDOMAIN:
        raise SenderDomainNotVerified(
            f"{name} does not exist in DNS (NXDOMAIN): publish the TXT record there.",
            reason="nxdomain",
        ) from None
    except dns.resolver.NoAnswer:
        raise SenderDomainNotVerified(
            f"{name} has no TXT record: publish the TXT record there.", reason="no_txt"
        ) from None
    except dns.exception.Timeout:
        raise SenderDomainNotVerified(
            f"DNS did not answer for {name} within {conf.dns_timeout_seconds():g} s; "
            "try again later.",
            reason="timeout",
        ) from None
    except dns.exception.DNSException as exc:
        # SERVFAIL or REFUSED from every nameserver, no resolver configured, a bad name.
        raise SenderDomainNotVerified(
            f"DNS lookup of {name} failed: {exc}", reason="dns_error"
        ) from None
    return [b"".join(rdata.strings).decode("utf-8", "replace").strip() for rdata in answer]


def sender_domain_verify_dns(*, sender_domain: SenderDomain) -> SenderDomain:
    """Look the domain's TXT record up now and mark it verified by DNS when it carries this
    client's token; SenderDomainNotVerified (409, with the reason) otherwise."""
    record = sender_domain_txt_record(sender_domain=sender_domain)
    values = _txt_values(record.name)
    if record.value not in values:
        others = sum(value.startswith(TXT_PREFIX) for value in values)
        # Tokens are per client and per domain: another client's (or an old) token is not ours.
        found = f"{others} with another token" if others else f"{len(values)} other value(s)"
        raise SenderDomainNotVerified(
            f"The TXT records at {record.name} do not include {record.value} (found {found}).",
            reason="wrong_token",
        )
    return _mark_verified(sender_domain, SenderDomain.VerifiedBy.DNS)


def _address_domain(spec: str) -> str:
    """The stored form of a bare address's domain, or "" when it is no hostname."""
    try:
        return domain_normalize(spec.rpartition("@")[2])
    except ValidationFailed:
        return ""


def sender_check(
    *, client: Client, from_email: str | None = None, reply_to: Sequence[str] = ()
) -> None:
    """Refuse (ValidationFailed naming `from_email` or `reply_to`) an address whose domain is
    not one of the client's verified sender domains.

    DEFAULT_FROM_EMAIL's own address is always allowed (it is what an email without from_email
    is sent as). One indexed query for all the addresses, none without any; nothing is checked
    when MAILQUEUE_SENDER_DOMAINS_REQUIRED is off.
    """
    if not (from_email or reply_to) or not conf.sender_domains_required():
        return
    default = address_spec(conf.default_from_email())
    wanted = [
        (field, spec, _address_domain(spec))
        for field, address in [("from_email", from_email), *(("reply_to", a) for a in reply_to)]
        if address and (spec := address_spec(address)) != default
    ]
    if not wanted:
        return
    verified = sender_domains_verified(
        client=client, domains={domain for _, _, domain in wanted if domain}
    )
    for field, spec, domain in wanted:
        if domain not in verified:
            shown = domain_unicode(domain) if domain else spec.rpartition("@")[2]
            raise ValidationFailed(
                f"'{shown}' ({spec}) is not a verified sender domain of this client: register "
                "it at /api/v1/sender-domains/ and verify it (or ask an operator).",
                field=field,
            )


# Each client's domains of its existing emails' from_email and reply_to addresses, in one grouped
# query (the upgrade that introduces sender domains registers them as verified).
_DOMAINS_IN_USE_SQL = """
SELECT used.client_id,
       lower(substring(used.address from '@([^@<>[:space:]]+)>?[[:space:]]*$')) AS domain
FROM (
    SELECT client_id, from_email AS address FROM {table} WHERE from_email <> ''
    UNION ALL
    SELECT e.client_id, r.address
    FROM {table} AS e CROSS JOIN LATERAL jsonb_array_elements_text(e.reply_to) AS r(address)
    WHERE jsonb_typeof(e.reply_to) = 'array' AND e.reply_to <> '[]'::jsonb
) AS used
GROUP BY 1, 2
"""


def _domains_in_use(email_model: type[models.Model], using: str) -> Iterable[tuple[int, str]]:
    """(client id, raw domain) pairs of the emails' from_email and reply_to addresses."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(email_model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(_DOMAINS_IN_USE_SQL.format(table=table))
            return [(client_id, domain) for client_id, domain in cursor.fetchall() if domain]
    # Other databases (a `make run` SQLite file): distinct pairs, split here.
    emails = email_model.objects.using(using)
    senders = emails.exclude(from_email="").values_list("client_id", "from_email").distinct()
    replies = emails.exclude(reply_to=[]).values_list("client_id", "reply_to").distinct()
    pairs = {(client_id, address) for client_id, address in senders}
    for client_id, addresses in replies:
        pairs.update((client_id, str(a)) for a in addresses if isinstance(addresses, list))
    return {(client_id, address_spec(address).rpartition("@")[2]) for client_id, address in pairs}


def sender_domains_backfill(
    *,
    email_model: type[models.Model] = EmailJob,
    domain_model: type[models.Model] = SenderDomain,
    using: str = "default",
) -> int:
    """Register, as verified by an operator, every domain each client's existing emails use
    in from_email or reply_to; returns how many were added (run by migration 0015, with the
    migration's models, so an upgrade breaks no existing sender)."""
    now = timezone.now()
    rows = {}
    for client_id, raw in _domains_in_use(email_model, using):
        domain = _address_domain(f"x@{raw}")
        if domain:
            rows[(client_id, domain)] = domain_model(
                client_id=client_id,
                domain=domain,
                verified_at=now,
                verified_by=SenderDomain.VerifiedBy.OPERATOR,
            )
    if not rows:
        return 0
    before = domain_model.objects.using(using).count()
    domain_model.objects.using(using).bulk_create(rows.values(), ignore_conflicts=True)
    return domain_model.objects.using(using).count() - before
