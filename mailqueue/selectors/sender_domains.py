"""Sender-domain reads: a client's list, one of its domains, and the check's one query."""

from collections.abc import Collection

from django.db.models import QuerySet
from django.http import Http404

from mailqueue.models import Client, SenderDomain


def sender_domain_list(*, client: Client) -> QuerySet[SenderDomain]:
    """The client's sender domains, verified or not, by domain."""
    return SenderDomain.objects.filter(client=client).order_by("domain", "id")


def sender_domain_get(*, client: Client, domain_id: int) -> SenderDomain:
    """One of the client's sender domains, or 404 (another client's is indistinguishable)."""
    sender_domain = SenderDomain.objects.filter(client=client, pk=domain_id).first()
    if sender_domain is None:
        raise Http404("No such sender domain.")
    return sender_domain


def sender_domains_verified(*, client: Client, domains: Collection[str]) -> set[str]:
    """Which of these (stored-form) domains the client has verified: one query on the unique
    (client, domain) index, none for no domain."""
    if not domains:
        return set()
    return set(
        SenderDomain.objects.filter(
            client=client, domain__in=list(domains), verified_at__isnull=False
        ).values_list("domain", flat=True)
    )
