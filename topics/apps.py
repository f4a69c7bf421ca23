"""The topics app."""

from django.apps import AppConfig


class TopicsConfig(AppConfig):
    """A client's topics (newsletters, digests) and the addresses subscribed to them."""

    name = "topics"
    verbose_name = "Topics and subscribers"
    default_auto_field = "django.db.models.BigAutoField"
