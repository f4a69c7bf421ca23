"""The RQ task of outbound webhooks."""

from client_webhooks.services import webhook_deliveries_attempt


def deliver_webhooks(delivery_ids: list[int]) -> dict[str, int]:
    """Attempt these webhook deliveries once each (retries are scheduled as new jobs)."""
    return webhook_deliveries_attempt(delivery_ids=delivery_ids)
