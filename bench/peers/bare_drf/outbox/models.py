"""The one table the bare peer writes."""

import uuid

from django.db import models


class Message(models.Model):
    """An accepted email: recipients, template name and context."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    to = models.JSONField(default=list)
    template = models.SlugField(max_length=100)
    context = models.JSONField(default=dict)
    status = models.CharField(max_length=10, default="queued")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        """The id, for the shell."""
        return str(self.id)
