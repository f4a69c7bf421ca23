"""Suppression reads: the API's list for one client, and what a worker asks before sending."""

import hashlib
from collections.abc import Iterable

from django.db.models import Q, QuerySet

from mailqueue.models import Client, EmailJob, Suppression, SuppressionReason
from mailqueue.validation import address_spec


def suppression_list(
    *, client: Client, reason: str | None = None, address: str | None = None
) -> QuerySet[Suppression]:
    """The client's own entries and the service-wide ones, newest first, filtered."""
    queryset = Suppression.objects.filter(Q(client=client) | Q(client__isnull=True))
    if reason:
        queryset = queryset.filter(reason=reason)
    if address:
        queryset = queryset.filter(address=address_spec(address) or address.strip().lower())
    return queryset


# An erased address stays on the list as this prefix and the SHA-256 of its bare form.
HASHED_ADDRESS_PREFIX = "sha256:"


def address_hash(address: str) -> str:
    """How an erased address is kept on the suppression list: `sha256:` and a hex digest."""
    digest = hashlib.sha256(address_spec(address).encode()).hexdigest()
    return f"{HASHED_ADDRESS_PREFIX}{digest}"


def suppressions_for_emails(*, emails: list[EmailJob]) -> None:
    """Attach to each email (as `suppression_rows`) the entries that name one of its recipients
    and may apply to it: one query for the whole chunk, none for an email without recipients.

    Which entries actually stop the email (topic, transactional) is decided by
    `email_suppressed_recipients` in the send thread, without the database.
    """
    specs = {email.pk: _recipient_specs(email) for email in emails}
    addresses = set().union(*specs.values())
    rows: dict[str, list[Suppression]] = {}
    if addresses:
        # Erased addresses are stored hashed: ask for both forms in the same query, and give a
        # hashed entry its address back (in memory only) so the rest reads plain addresses.
        hashed = {address_hash(address): address for address in addresses}
        client_ids = {email.client_id for email in emails}
        entries = Suppression.objects.filter(
            Q(client__isnull=True) | Q(client_id__in=client_ids),
            address__in=[*addresses, *hashed],
        ).only("address", "reason", "client_id", "topic")
        for entry in entries:
            entry.address = hashed.get(entry.address, entry.address)
            rows.setdefault(entry.address, []).append(entry)
    for email in emails:
        email.suppression_rows = (
            [entry for spec in specs[email.pk] for entry in rows.get(spec, ())] if rows else []
        )


def _recipient_specs(email: EmailJob) -> set[str]:
    # `to_addresses` holds the `to` addresses already normalized when the email was accepted:
    # parsing addresses costs more than the lookup itself, so only cc and bcc are parsed.
    specs = set(email.to_addresses or (address_spec(a) for a in email.to))
    if email.cc or email.bcc:
        specs.update(address_spec(a) for a in (*email.cc, *email.bcc))
    return specs - {""}


def _applies(entry: Suppression, email: EmailJob) -> bool:
    """Whether one entry stops this email: its client's (or service-wide), its topic (or every
    topic), and, for an unsubscribe, only non-transactional email."""
    if entry.client_id is not None and entry.client_id != email.client_id:
        return False
    if entry.topic and entry.topic != email.topic:
        return False
    return entry.reason != SuppressionReason.UNSUBSCRIBE or not email.transactional


def email_suppressed_recipients(*, email: EmailJob) -> dict[str, str]:
    """Recipients of a claimed email that must be dropped, each with the reason (bare,
    lowercased addresses); reads only the entries attached with the claim."""
    dropped: dict[str, str] = {}
    for entry in _attached(email):
        if entry.address not in dropped and _applies(entry, email):
            dropped[entry.address] = entry.reason
    return dropped


def _attached(email: EmailJob) -> Iterable[Suppression]:
    rows = getattr(email, "suppression_rows", None)
    if rows is None:
        # Not loaded with a claim (an email delivered on its own): ask now.
        suppressions_for_emails(emails=[email])
        rows = email.suppression_rows
    return rows
