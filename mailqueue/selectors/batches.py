"""Batch reads for the API and the admin: one client's batch, and how far along its emails are."""

from uuid import UUID

from django.db.models import Count
from django.http import Http404

from mailqueue.models import Batch, Client, EmailJob, EmailStatus


def batch_get(*, client: Client, batch_id: UUID | str) -> Batch:
    """One of the client's batches, or 404."""
    batch = Batch.objects.filter(client=client, pk=batch_id).select_related("template").first()
    if batch is None:
        raise Http404("No such batch.")
    return batch


def batch_status_counts(*, batch: Batch) -> dict[str, int]:
    """How many of a batch's emails are in each status."""
    counts = {status: 0 for status in EmailStatus.values}
    rows = EmailJob.objects.filter(batch=batch).values("status").annotate(n=Count("pk")).order_by()
    for row in rows:
        counts[row["status"]] = row["n"]
    return counts
