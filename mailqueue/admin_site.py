"""The Mailqueue admin site: Django's `AdminSite` with our titles and the operator dashboard
(`mailqueue.admin.dashboard`) on its home page.

`mailqueue.apps.MailqueueAdminConfig` makes it the default site (`admin.site`), so every
`@admin.register`, ours and django-rq's, lands on it and `admin.site.urls` serves it. It lives
outside the `mailqueue.admin` package on purpose: Django imports this module while it creates
`admin.site`, and importing that package registers ModelAdmins on `admin.site`, which would create
a second site and lose the registrations made on the first.
"""

import math
from functools import cache
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from mailqueue.errors import QueueNotFound
from mailqueue.security import (
    login_attempt,
    login_blocked_seconds,
    login_failure_record,
    login_success_record,
)
from mailqueue.selectors.dashboard import dashboard_stats
from mailqueue.services.queues import queue_pause, queue_resume

# Pausing and resuming a queue: the permissions on the pause rows.
QUEUE_CONTROL_PERMISSIONS = ("mailqueue.add_queuepause", "mailqueue.delete_queuepause")
# Set on a login request that the limit refuses: the seconds until it may try again.
LOGIN_WAIT_ATTRIBUTE = "mailqueue_login_wait"


@cache
def throttled_login_form() -> type:
    """Django's admin login form, refusing (before any password check) a request the login
    limit blocks. Built on first use: the form's module imports the User model, which does not
    exist yet when this module is imported (see the module docstring)."""
    from django.contrib.admin.forms import AdminAuthenticationForm

    class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
        """AdminAuthenticationForm that says "try again later" to a blocked request."""

        def clean(self) -> dict[str, Any]:
            """The blocked request's error, or Django's checks of the username and password."""
            wait = getattr(self.request, LOGIN_WAIT_ATTRIBUTE, 0)
            if wait:
                minutes = math.ceil(wait / 60)
                raise ValidationError(
                    "Too many failed logins from this address or for this username. "
                    f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
                    code="throttled",
                )
            return super().clean()

    return ThrottledAdminAuthenticationForm


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

    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Django's login page, with failed logins limited per client IP and per username
        (mailqueue.security): a blocked POST answers 429 with Retry-After."""
        # The same class every time: setting it per request is safe across threads.
        self.login_form = throttled_login_form()
        if request.method != "POST":
            return super().login(request, extra_context)
        attempt = login_attempt(request)
        wait = login_blocked_seconds(attempt)
        setattr(request, LOGIN_WAIT_ATTRIBUTE, wait)
        response = super().login(request, extra_context)
        if wait:
            response.status_code = 429
            response["Retry-After"] = str(wait)
        elif response.status_code == 302 and request.user.is_authenticated:
            login_success_record(attempt)
        else:
            login_failure_record(attempt)
        return response

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
