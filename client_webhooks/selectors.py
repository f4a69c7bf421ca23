"""Reads of webhook endpoints and deliveries, and the per-process cache of who subscribes."""

import threading
import time
from uuid import UUID

from client_webhooks.errors import WebhookEndpointNotFound
from client_webhooks.models import WebhookEndpoint
from mailqueue.models import Client

# How long a process trusts its copy of the active endpoints. The worker asks for every group of
# outcomes, so the answer must cost nothing; an endpoint created, changed or deleted in another
# process is seen at most this late (its own process sees it at once).
SUBSCRIPTIONS_TTL_SECONDS = 5.0

_lock = threading.Lock()
# client id -> [(endpoint id, event types)], and when it was loaded (monotonic seconds).
_subscriptions: dict[int, list[tuple[UUID, frozenset[str]]]] = {}
_loaded_at = float("-inf")


def webhook_endpoint_list(*, client: Client) -> list[WebhookEndpoint]:
    """The client's endpoints, oldest first."""
    return list(WebhookEndpoint.objects.filter(client=client).order_by("created_at", "id"))


def webhook_endpoint_get(*, client: Client, endpoint_id: UUID | str) -> WebhookEndpoint:
    """One of the client's endpoints; WebhookEndpointNotFound (404) for any other id."""
    endpoint = WebhookEndpoint.objects.filter(client=client, pk=endpoint_id).first()
    if endpoint is None:
        raise WebhookEndpointNotFound("No such webhook endpoint.")
    return endpoint


def webhook_subscriptions() -> dict[int, list[tuple[UUID, frozenset[str]]]]:
    """Active endpoints by client id with the event types each wants, from this process's copy
    (reloaded, one query, when older than SUBSCRIPTIONS_TTL_SECONDS)."""
    global _subscriptions, _loaded_at
    if time.monotonic() - _loaded_at < SUBSCRIPTIONS_TTL_SECONDS:
        return _subscriptions
    with _lock:
        if time.monotonic() - _loaded_at >= SUBSCRIPTIONS_TTL_SECONDS:
            loaded: dict[int, list[tuple[UUID, frozenset[str]]]] = {}
            rows = WebhookEndpoint.objects.filter(active=True).values_list(
                "client_id", "id", "events"
            )
            for client_id, endpoint_id, events in rows:
                loaded.setdefault(client_id, []).append((endpoint_id, frozenset(events)))
            # Swapped whole, so a reader in another thread sees the old or the new copy.
            _subscriptions, _loaded_at = loaded, time.monotonic()
    return _subscriptions


def webhook_subscriptions_forget() -> None:
    """Make this process reload the active endpoints at its next dispatch."""
    global _loaded_at
    _loaded_at = float("-inf")
