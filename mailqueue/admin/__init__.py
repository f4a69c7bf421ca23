"""Admin for emails, batches, clients, API keys and the capture inbox; the site itself, with the
dashboard on its home page, is `mailqueue.admin_site.MailqueueAdminSite`."""

from mailqueue.admin import batches, capture, dkim, emails, keys, suppressions  # noqa: F401
