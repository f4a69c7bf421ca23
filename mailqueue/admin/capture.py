"""The capture inbox: messages the `capture` provider kept instead of sending."""

from email import message_from_string
from email import policy as email_policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage as MimeMessage
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from mailqueue.admin.helpers import (
    DetailToolsMixin,
    LightChangeListMixin,
    ReadOnlyAdminMixin,
    admin_url,
    email_link,
    preformatted,
    sandboxed_html,
)
from mailqueue.errors import InvalidTransition, ValidationFailed
from mailqueue.models import CapturedMessage
from mailqueue.services import captured_message_release


@admin.register(CapturedMessage)
class CapturedMessageAdmin(
    DetailToolsMixin, LightChangeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin
):
    """The capture inbox: what the `capture` provider would have sent, exactly as MIME."""

    list_display = (
        "created_at",
        "to_display",
        "subject_display",
        "from_email",
        "email_link",
        "released_as_link",
    )
    list_display_links = ("created_at", "subject_display")
    # A dev inbox, small enough for icontains; `to` is a JSON list, searched as text.
    search_fields = ("subject", "to")
    search_help_text = "Part of the subject or of a recipient address."
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    changelist_defer = ("mime",)
    fields = (
        "created_at",
        "message_id",
        "from_email",
        "to_display",
        "subject_display",
        "email_link",
        "released_as_link",
        "headers_display",
        "text_part",
        "html_part",
        "raw_mime",
    )
    readonly_fields = fields

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The inbox list."""
        extra_context = {"title": "Capture inbox", **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list:
        """The default URLs plus the POST-only release of one message."""
        return [
            admin_url(self, "<path:object_id>/release/", self.release_view, "release"),
            *super().get_urls(),
        ]

    def detail_tools(self, request: HttpRequest, obj: CapturedMessage | None) -> dict[str, Any]:
        """The release button, for users who may send, until the message is released."""
        released = obj is not None and obj.released_as_id is not None
        return {"can_release": self.has_change_permission(request) and not released}

    def release_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Send a captured message through the real provider (POST), as a new email."""
        return require_POST(self._release)(request, object_id)

    def _release(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        captured = self.get_object(request, unquote(object_id))
        if captured is None:
            raise Http404("No such captured message.")
        try:
            email = captured_message_release(captured=captured, user=request.user)
        except (ValidationFailed, InvalidTransition) as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                format_html(
                    'Released: queued as <a href="{}">a new email to {}</a>.',
                    reverse("admin:mailqueue_emailjob_change", args=[email.pk]),
                    email.recipient,
                ),
            )
        return HttpResponseRedirect(
            reverse("admin:mailqueue_capturedmessage_change", args=[captured.pk])
        )

    def _parsed(self, obj: CapturedMessage) -> MimeMessage:
        # One parse per request per message, shared by the header and body fields.
        cached = getattr(obj, "_parsed_mime", None)
        if cached is None:
            cached = message_from_string(obj.mime, policy=email_policy.default)
            obj._parsed_mime = cached
        return cached

    def _body(self, obj: CapturedMessage, subtype: str) -> str:
        part = self._parsed(obj).get_body(preferencelist=(subtype,))
        if part is None or part.get_content_subtype() != subtype:
            return ""
        try:
            return part.get_content()
        except (LookupError, UnicodeError):
            # An unknown or wrong charset: show the bytes as UTF-8 rather than fail the page.
            payload = part.get_payload(decode=True) or b""
            return payload.decode("utf-8", errors="replace")

    @admin.display(description="subject")
    def subject_display(self, obj: CapturedMessage) -> str:
        """The subject, decoded if it was stored in its RFC 2047 encoded form."""
        try:
            return str(make_header(decode_header(obj.subject)))
        except (HeaderParseError, LookupError, UnicodeDecodeError):
            return obj.subject

    @admin.display(description="to")
    def to_display(self, obj: CapturedMessage) -> str:
        """Every envelope recipient (to, cc and bcc)."""
        return ", ".join(obj.to)

    @admin.display(description="email")
    def email_link(self, obj: CapturedMessage) -> SafeString | str:
        """The email job this message came from."""
        return email_link(obj.email_id)

    @admin.display(description="released as")
    def released_as_link(self, obj: CapturedMessage) -> SafeString | str:
        """The email that sent this message for real, once it has been released."""
        return email_link(obj.released_as_id, css_class="released-as")

    @admin.display(description="headers")
    def headers_display(self, obj: CapturedMessage) -> SafeString:
        """The message's top-level headers, decoded."""
        rows = ((name, str(value)) for name, value in self._parsed(obj).items())
        return format_html(
            "<table><tbody>{}</tbody></table>",
            format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
        )

    @admin.display(description="text part")
    def text_part(self, obj: CapturedMessage) -> SafeString:
        """The text/plain body."""
        return preformatted(self._body(obj, "plain"), empty="(no text part)")

    @admin.display(description="HTML part")
    def html_part(self, obj: CapturedMessage) -> SafeString:
        """The text/html body, sandboxed."""
        return sandboxed_html(self._body(obj, "html"))

    @admin.display(description="raw MIME")
    def raw_mime(self, obj: CapturedMessage) -> SafeString:
        """The message exactly as it would have gone out."""
        return preformatted(obj.mime)
