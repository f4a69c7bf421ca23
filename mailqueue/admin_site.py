"""The Mailqueue admin site: Django's `AdminSite` with our titles and the operator dashboard
(`mailqueue.admin.dashboard`) on its home page.

`mailqueue.apps.MailqueueAdminConfig` makes it the default site (`admin.site`), so every
`@admin.register`, ours and django-rq's, lands on it and `admin.site.urls` serves it. It lives
outside the `mailqueue.admin` package on purpose: Django imports this module while it creates
`admin.site`, and importing that package registers ModelAdmins on `admin.site`, which would create
a second site and lose the registrations made on the first.
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from mailqueue.selectors.dashboard import dashboard_stats


class MailqueueAdminSite(admin.AdminSite):
    """The admin, titled for Mailqueue, whose home page starts with the dashboard."""

    site_header = "Mailqueue"
    site_title = "Mailqueue admin"
    index_title = "Outbox, templates and API keys"

    def index(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The admin home, with the dashboard for users who may see emails."""
        # Imported here, not at the top: see the module docstring.
        from mailqueue.admin.dashboard import dashboard_context

        extra_context = dict(extra_context or {})
        if request.user.has_perm("mailqueue.view_emailjob"):
            extra_context.setdefault("dashboard", dashboard_context(dashboard_stats()))
        return super().index(request, extra_context=extra_context)
