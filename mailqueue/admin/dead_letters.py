"""The dead-letters page: failed emails grouped by the shape of their error, retried per group.

Emails still being retried are grouped the same way, so a cause that will never go away can be
cancelled before every email exhausts its attempts.
"""

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from mailqueue.admin.helpers import admin_url, email_changelist_url
from mailqueue.models import EmailStatus
from mailqueue.selectors.dead_letters import (
    DEAD_LETTER_GROUPS_SHOWN,
    dead_letter_groups,
    retrying_groups,
)
from mailqueue.selectors.emails import email_list
from mailqueue.services import BulkResult
from mailqueue.services.emails import emails_cancel_matching, emails_retry_matching


class DeadLettersAdminMixin:
    """Adds `dead-letters/` and its two POST actions to the email admin."""

    def dead_letter_urls(self) -> list:
        """The page and its POST-only group actions."""
        return [
            admin_url(self, "dead-letters/", self.dead_letters_view, "dead_letters"),
            admin_url(
                self, "dead-letters/retry/", self.dead_letters_retry_view, "dead_letters_retry"
            ),
            admin_url(
                self, "dead-letters/cancel/", self.dead_letters_cancel_view, "dead_letters_cancel"
            ),
        ]

    def dead_letters_view(self, request: HttpRequest) -> HttpResponse:
        """Failed emails by error group, then retrying emails by error."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        failed = dead_letter_groups()
        retrying = retrying_groups()
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Dead letters",
            "failed_groups": [
                (
                    group,
                    email_changelist_url(status__exact=EmailStatus.FAILED, error_group=group.key),
                )
                for group in failed
            ],
            "failed_groups_capped": len(failed) >= DEAD_LETTER_GROUPS_SHOWN,
            "groups_shown": DEAD_LETTER_GROUPS_SHOWN,
            "retrying": retrying,
            # One table template serves both: retrying groups link to no email list.
            "retrying_rows": [(group, None) for group in retrying.groups],
            "retrying_list_url": email_changelist_url(status__exact=EmailStatus.RETRYING),
            "can_act": self.has_change_permission(request),
        }
        return TemplateResponse(request, "admin/mailqueue/emailjob/dead_letters.html", context)

    def _group_key(self, request: HttpRequest) -> str:
        if not self.has_change_permission(request):
            raise PermissionDenied
        return request.POST.get("error_group", "").strip()

    def _back_to_dead_letters(self) -> HttpResponseRedirect:
        info = self.opts.app_label, self.opts.model_name
        return HttpResponseRedirect(reverse("admin:{}_{}_dead_letters".format(*info)))

    def _report(self, request: HttpRequest, result: BulkResult, *, verb: str, why: str) -> None:
        level = messages.SUCCESS if result.changed else messages.WARNING
        self.message_user(
            request,
            f"{verb} {result.changed} email(s); skipped {result.skipped} that {why}.",
            level,
        )

    def dead_letters_retry_view(self, request: HttpRequest) -> HttpResponse:
        """Queue every failed email of one group again (POST), with the statement the API's
        POST /failed/retry/ runs (emails_retry_matching)."""
        return require_POST(self._retry_group)(request)

    def _retry_group(self, request: HttpRequest) -> HttpResponse:
        emails = email_list(
            client=None, status=EmailStatus.FAILED, error_group=self._group_key(request)
        )
        result = emails_retry_matching(emails=emails, skip_suppressed=True)
        why = "were not failed or cancelled"
        if result.skipped:
            why += " or had only suppressed recipients"
        self._report(request, result, verb="Retried", why=why)
        return self._back_to_dead_letters()

    def dead_letters_cancel_view(self, request: HttpRequest) -> HttpResponse:
        """Cancel every retrying email of one group (POST), with the statement the API's
        POST /failed/cancel/ runs (emails_cancel_matching)."""
        return require_POST(self._cancel_group)(request)

    def _cancel_group(self, request: HttpRequest) -> HttpResponse:
        emails = email_list(
            client=None, status=EmailStatus.RETRYING, error_group=self._group_key(request)
        )
        result = emails_cancel_matching(emails=emails)
        self._report(
            request, result, verb="Cancelled", why="were not scheduled, queued or retrying"
        )
        return self._back_to_dead_letters()
