"""Admin for emails, batches, clients, API keys and the capture inbox; the site itself, with the
dashboard on its home page, is `mailqueue.admin_site.MailqueueAdminSite`."""

from mailqueue.admin import (  # noqa: F401
    batches,
    capture,
    dkim,
    emails,
    keys,
    sender_domains,
    suppressions,
)
