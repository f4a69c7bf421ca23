"""Admin for emails, batches, clients, API keys, the capture inbox and the home dashboard."""

from mailqueue.admin import batches, capture, dashboard, emails, keys  # noqa: F401
