"""Email reads: the API's list and detail, each scoped to the calling client, and the
admin's status counts over any emails it names."""

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from django.db import connection
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet
from django.http import Http404

from mailqueue.models import Client, DeliveryAttempt, EmailJob
from mailqueue.validation import address_spec
from tracking.models import TrackingEvent


def recipient_q(address: str) -> Q:
    """Emails with this address among their To recipients."""
    spec = address_spec(address) or address.strip().lower()
    if connection.vendor == "postgresql":
        return Q(to_addresses__contains=[spec])  # jsonb containment, GIN-indexed
    # SQLite (local runs) has no JSON containment: match the quoted item in the JSON text.
    return Q(to_addresses__icontains=f'"{spec}"')


def tag_q(tag: str) -> Q:
    """Emails carrying a tag."""
    if connection.vendor == "postgresql":
        return Q(tags__contains=[tag])
    # SQLite (local runs) has no JSON containment: match the quoted item in the JSON text.
    return Q(tags__icontains=f'"{tag}"')


def email_list(
    *,
    client: Client | None,
    status: str | None = None,
    batch: UUID | None = None,
    to: str | None = None,
    tag: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    event: str | None = None,
    error_group: str | None = None,
    template: str | None = None,
) -> QuerySet[EmailJob]:
    """A client's emails (every client's for None: operators only), filtered (`event`: with at
    least one such event; `template`: a slug); a batch or template the client has no emails of
    simply matches nothing."""
    queryset = EmailJob.objects.select_related("template")
    if client is not None:
        queryset = queryset.filter(client=client)
    if status:
        queryset = queryset.filter(status=status)
    if error_group:
        queryset = queryset.filter(error_group=error_group)
    if template:
        queryset = queryset.filter(template__slug=template)
    if batch:
        queryset = queryset.filter(batch_id=batch)
    if to:
        queryset = queryset.filter(recipient_q(to))
    if tag:
        queryset = queryset.filter(tag_q(tag))
    if created_after:
        queryset = queryset.filter(created_at__gte=created_after)
    if created_before:
        queryset = queryset.filter(created_at__lt=created_before)
    if event:
        # EXISTS per email, served by the (email, occurred_at) index of email_tracking.
        events = TrackingEvent.objects.filter(email=OuterRef("pk"), event_type=event)
        queryset = queryset.filter(Exists(events))
    return queryset


def email_get(*, client: Client, email_id: UUID | str, with_history: bool = False) -> EmailJob:
    """One of the client's emails, or 404 (another client's email is indistinguishable)."""
    queryset = EmailJob.objects.filter(client=client).select_related("template")
    if with_history:
        queryset = queryset.prefetch_related(
            Prefetch("events", queryset=TrackingEvent.objects.order_by("occurred_at", "id")),
            Prefetch(
                "delivery_attempts", queryset=DeliveryAttempt.objects.order_by("started_at", "id")
            ),
        )
    email = queryset.filter(pk=email_id).first()
    if email is None:
        raise Http404("No such email.")
    return email


def email_status_counts(*, email_ids: Iterable[UUID]) -> dict[str, int]:
    """How many of the given emails are in each status (statuses with none are left out)."""
    rows = (
        EmailJob.objects.filter(pk__in=list(email_ids))
        .values("status")
        .annotate(n=Count("pk"))
        .order_by("status")
    )
    return {row["status"]: row["n"] for row in rows}
