"""The client_webhooks app."""

from django.apps import AppConfig


class ClientWebhooksConfig(AppConfig):
    """Endpoints a client registers, and the deliveries of its emails' events to them."""

    name = "client_webhooks"
    verbose_name = "Client webhooks"
    default_auto_field = "django.db.models.BigAutoField"
