"""Outbound webhooks: a client's endpoints, and the signed deliveries of its emails' events."""
