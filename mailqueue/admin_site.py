"""The Mailqueue admin site: Django's `AdminSite` with our titles and the operator dashboard
(`mailqueue.admin.dashboard`) on its home page.

`mailqueue.apps.MailqueueAdminConfig` makes it the default site (`admin.site`), so every
`@admin.register`, ours and django-rq's, lands on it and `admin.site.urls` serves it. It lives
outside the `mailqueue.admin` package on purpose: Django imports this module while it creates
`admin.site`, and importing that package registers ModelAdmins on `admin.site`, which would create
a second site and lose the registrations made on the first.
"""

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from mailqueue.errors import QueueNotFound
from mailqueue.selectors.dashboard import dashboard_stats
from mailqueue.services.queues import queue_pause, queue_resume

# Pausing and resuming a queue: the permissions on the pause rows.
QUEUE_CONTROL_PERMISSIONS = ("mailqueue.add_queuepause", "mailqueue.delete_queuepause")


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
            extra_context.setdefault(
                "dashboard",
                dashboard_context(
                    dashboard_stats(),
                    can_control_queues=request.user.has_perms(QUEUE_CONTROL_PERMISSIONS),
                ),
            )
        return super().index(request, extra_context=extra_context)

    def get_urls(self) -> list:
        """Django's admin URLs plus the dashboard's Pause and Resume buttons."""
        return [
            path(
                "queues/<str:name>/pause/",
                self.admin_view(self.queue_pause_view),
                name="mailqueue_queue_pause",
            ),
            path(
                "queues/<str:name>/resume/",
                self.admin_view(self.queue_resume_view),
                name="mailqueue_queue_resume",
            ),
            *super().get_urls(),
        ]

    @staticmethod
    def _queue_control(request: HttpRequest, name: str, *, pause: bool) -> HttpResponse:
        # The same services the API calls (`POST /api/v1/queues/{name}/pause/`, `/resume/`).
        if not request.user.has_perms(QUEUE_CONTROL_PERMISSIONS):
            raise PermissionDenied
        try:
            if pause:
                queue_pause(priority=name, paused_by=f"admin:{request.user.get_username()}")
            else:
                queue_resume(priority=name)
        except QueueNotFound as exc:
            raise Http404(exc.message) from None
        if pause:
            messages.success(request, f"Queue {name} paused: it accepts emails and sends none.")
        else:
            messages.success(request, f"Queue {name} resumed: what waited is being sent.")
        return HttpResponseRedirect(reverse("admin:index"))

    @method_decorator(require_POST)
    def queue_pause_view(self, request: HttpRequest, name: str) -> HttpResponse:
        """Pause a queue from the dashboard."""
        return self._queue_control(request, name, pause=True)

    @method_decorator(require_POST)
    def queue_resume_view(self, request: HttpRequest, name: str) -> HttpResponse:
        """Resume a queue from the dashboard."""
        return self._queue_control(request, name, pause=False)
