"""Admin for emails, batches, clients, API keys and the capture inbox (one module each)."""

from mailqueue.admin import batches, capture, emails, keys  # noqa: F401
