"""Email jobs admin: a fast list, a read-only detail with the rendered message, and actions.

Every change goes through a service (retry, cancel); the pages stay fast on tables with millions
of rows.
"""

import contextlib
import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST
from django_rq.settings import get_queues_map

from mailqueue.admin.dead_letters import DeadLettersAdminMixin
from mailqueue.admin.helpers import (
    AppendOnlyAdminMixin,
    DetailToolsMixin,
    EstimatedCountPaginator,
    IdSearchMixin,
    LightChangeListMixin,
    ReadOnlyAdminMixin,
    admin_change_link,
    admin_url,
    email_changelist_url,
    emails_cancel_bulk,
    emails_retry_bulk,
    error_block,
    pretty_json,
    rendered_parts,
)
from mailqueue.errors import InvalidTransition, MailqueueError
from mailqueue.models import (
    Batch,
    DeliveryAttempt,
    EmailJob,
    EmailStatus,
)
from mailqueue.selectors.dead_letters import dead_letter_group_get
from mailqueue.selectors.timeline import email_get_for_timeline, email_origin, email_timeline
from mailqueue.services import email_cancel, email_retry
from mailqueue.services.delivery import email_render
from mailqueue.services.emails import CANCELLABLE, RETRYABLE
from mailqueue.services.redaction import content_redact, context_redact, email_secret_values
from mailqueue.services.retention import recipient_data_erase
from mailqueue.validation import address_spec
from templates_app.models import EmailTemplate
from tracking.models import EventType, TrackingEvent

# Columns never shown on the email list; a page of 100 emails would otherwise load 100 bodies.
EMAIL_LIST_DEFERRED = (
    "html",
    "text",
    "context",
    "headers",
    "metadata",
    "last_error",
    "template__html",
    "template__text",
    "template__sample_context",
    "template__variables",
)


class EmailTemplateFilter(admin.SimpleListFilter):
    """Filter by template, listing the (few) templates rather than scanning the emails."""

    title = "template"
    parameter_name = "template"
    none_value = "none"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        """Every stored template, plus emails sent with raw content."""
        choices = [(str(pk), slug) for pk, slug in EmailTemplate.objects.values_list("pk", "slug")]
        return [*choices, (self.none_value, "(no template: raw content)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        """Emails of the chosen template."""
        value = self.value()
        if value is None:
            return queryset
        if value == self.none_value:
            return queryset.filter(template__isnull=True)
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(template_id=int(value))


class ErrorGroupFilter(admin.SimpleListFilter):
    """Emails of one dead-letter group: a URL parameter set by the dead-letters page.

    There can be thousands of groups, so the sidebar lists only the one in use.
    """

    title = "dead-letter group"
    parameter_name = "error_group"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        """The group being filtered on, if any."""
        value = self.value()
        return [] if value is None else [(value, "this group")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        """Emails whose error fingerprint is the group's key."""
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(error_group=value)


class DeliveryAttemptInline(AppendOnlyAdminMixin, admin.TabularInline):
    """Each try at handing the email to a provider."""

    model = DeliveryAttempt
    fields = (
        "number",
        "provider",
        "outcome",
        "error_class",
        "error_message",
        "started_at",
        "duration_ms",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = "delivery attempts"


class TrackingEventInline(AppendOnlyAdminMixin, admin.TabularInline):
    """What happened to the email, as seen by us or reported by the provider."""

    model = TrackingEvent
    fields = ("event_type", "occurred_at", "provider", "description")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "events"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Events in the order they happened."""
        return super().get_queryset(request).order_by("occurred_at", "id")


@admin.register(EmailJob)
class EmailJobAdmin(
    DeadLettersAdminMixin,
    DetailToolsMixin,
    IdSearchMixin,
    LightChangeListMixin,
    ReadOnlyAdminMixin,
    admin.ModelAdmin,
):
    """The outbox: filters and search that use indexes, read-only detail, retry and cancel."""

    list_display = (
        "recipient",
        "subject_display",
        "status",
        "priority",
        "template",
        "client",
        "attempts",
        "created_at",
        "sent_at",
    )
    list_select_related = ("template", "client")
    list_filter = (
        "status",
        "priority",
        EmailTemplateFilter,
        ("created_at", admin.DateFieldListFilter),
        ErrorGroupFilter,
    )
    # Sorting by any other column would sort millions of rows; created_at has an index.
    sortable_by = ("created_at",)
    search_fields = ("recipient",)
    search_help_text = (
        "A full address matches exactly; anything else matches the start of the recipient "
        "address. An email id (UUID) finds that email."
    )
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    changelist_defer = EMAIL_LIST_DEFERRED
    actions = ("retry_selected", "cancel_selected", "erase_recipients")
    inlines = (DeliveryAttemptInline, TrackingEventInline)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "status",
                    "attempts_display",
                    "last_error",
                    "created_at",
                    "send_at",
                    "next_attempt_at",
                    "sent_at",
                    "updated_at",
                )
            },
        ),
        ("Recipients", {"fields": ("from_email", "recipients_display")}),
        (
            "Origin and delivery",
            {
                "fields": (
                    "priority",
                    "template",
                    "template_version_link",
                    "batch_link",
                    "client_link",
                    "api_key_link",
                    "provider",
                    "route_display",
                    "message_id",
                    "rq_job_display",
                )
            },
        ),
        (
            "Data",
            {
                "fields": (
                    "tags_display",
                    "metadata_display",
                    "context_display",
                    "headers_display",
                    "attachments_display",
                )
            },
        ),
        ("Content", {"fields": ("content_display",)}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: EmailJob | None = None) -> list[str]:
        """Every field shown on the detail page."""
        return [name for _, options in self.fieldsets for name in options["fields"]]

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Only superusers may delete emails (their history goes with them)."""
        return request.user.is_superuser

    def search_beyond_id(self, queryset: QuerySet, term: str) -> QuerySet:
        """Indexed lookups only: an exact address, or an address prefix."""
        spec = address_spec(term) if "@" in term else ""
        if spec:
            try:
                validate_email(spec)
            except ValidationError:
                spec = ""
        if spec:
            return queryset.filter(recipient=spec)
        # A prefix, never icontains: `LIKE 'x%'` can use an index, `LIKE '%x%'` scans the table.
        return queryset.filter(recipient__startswith=term.lower())

    def get_urls(self) -> list:
        """The default URLs plus the timeline, POST-only retry and cancel, and dead letters."""
        return [
            *self.dead_letter_urls(),
            admin_url(self, "<path:object_id>/timeline/", self.timeline_view, "timeline"),
            admin_url(self, "<path:object_id>/retry/", self.retry_view, "retry"),
            admin_url(self, "<path:object_id>/cancel/", self.cancel_view, "cancel"),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The list, naming the batch or the dead-letter group it is filtered by."""
        extra_context = {"title": "Emails", **(extra_context or {})}
        error_group = request.GET.get(ErrorGroupFilter.parameter_name)
        if error_group is not None:
            extra_context["filtered_group"] = dead_letter_group_get(error_group=error_group)
        batch_id = request.GET.get("batch__id__exact")
        if batch_id:
            # A malformed id is reported by the change list itself (it cannot filter by it).
            with contextlib.suppress(ValueError):
                extra_context["filtered_batch"] = Batch.objects.filter(
                    pk=uuid.UUID(batch_id)
                ).first()
        return super().changelist_view(request, extra_context)

    def detail_tools(self, request: HttpRequest, obj: EmailJob | None) -> dict[str, Any]:
        """Retry and cancel buttons, when the status allows them."""
        if obj is None or not self.has_change_permission(request):
            return {}
        return {"can_retry": obj.status in RETRYABLE, "can_cancel": obj.status in CANCELLABLE}

    def timeline_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Everything that happened to one email, in order, with the message as it went out."""
        try:
            email_id = uuid.UUID(unquote(object_id))
        except ValueError:
            raise Http404("No such email.") from None
        email = email_get_for_timeline(email_id=email_id)
        if email is None:
            raise Http404("No such email.")
        if not self.has_view_permission(request, email):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": email,
            "title": f"Timeline of the email to {email.recipient}",
            "email": email,
            "origin": email_origin(email=email),
            "entries": email_timeline(email=email),
            "template_version": self.template_version_link(email),
            "content": self.content_display(email),
        }
        return TemplateResponse(request, "admin/mailqueue/emailjob/timeline.html", context)

    def _transition_view(self, request: HttpRequest, object_id: str, service: Any) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        email = self.get_object(request, unquote(object_id))
        if email is None:
            raise Http404("No such email.")
        try:
            service(email=email)
        except InvalidTransition as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"The email to {email.recipient} is now {email.status}.")
        return HttpResponseRedirect(reverse("admin:mailqueue_emailjob_change", args=[email.pk]))

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Queue one failed or cancelled email again (POST)."""
        return require_POST(self._transition_view)(request, object_id, email_retry)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Cancel one email that has not started sending (POST)."""
        return require_POST(self._transition_view)(request, object_id, email_cancel)

    @admin.action(description="Retry selected emails", permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Retry the failed and cancelled emails among the selection, 1000 at a time."""
        emails_retry_bulk(self, request, queryset)

    @admin.action(description="Cancel selected emails", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Cancel the scheduled, queued and retrying emails among the selection, 1000 at a time."""
        emails_cancel_bulk(self, request, queryset)

    @admin.action(description="Erase this recipient's data", permissions=["change"])
    def erase_recipients(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Erase every stored email, event and capture of each selected email's recipient."""
        # At most 100 selected emails' recipients per action: each erasure scans cc and bcc.
        addresses = sorted(set(queryset.values_list("recipient", flat=True)[:100]) - {""})
        for address in addresses:
            recipient_data_erase(address=address)
        self.message_user(
            request,
            f"Erased the data of {len(addresses)} recipient(s); suppressions kept as hashes.",
            messages.SUCCESS,
        )

    @admin.display(description="subject")
    def subject_display(self, obj: EmailJob) -> str:
        """The subject, or the template slug until the email is rendered."""
        if obj.subject:
            return obj.subject
        return f"[{obj.template.slug}]" if obj.template_id else "-"

    @admin.display(description="attempts")
    def attempts_display(self, obj: EmailJob) -> str:
        """Attempts made out of the maximum."""
        return f"{obj.attempts} of {obj.max_attempts}"

    @admin.display(description="route")
    def route_display(self, obj: EmailJob) -> SafeString | str:
        """The providers each attempt went through, in order, and any failover (providers that
        failed, or were skipped because their circuit breaker was open)."""
        attempts: dict[int, list[tuple[str, str]]] = {}
        for number, provider, outcome in obj.delivery_attempts.order_by(
            "started_at", "id"
        ).values_list("number", "provider", "outcome"):
            attempts.setdefault(number, []).append((provider or "no provider", outcome))
        if not attempts:
            return "-"
        sent = obj.events.filter(event_type=EventType.SENT).values_list("description", flat=True)
        failover = next((text for text in sent if text), "")
        lines = [
            (number, " → ".join(f"{provider} ({outcome})" for provider, outcome in tries))
            for number, tries in attempts.items()
        ]
        route = format_html_join("", "<div>attempt {}: {}</div>", lines)
        if failover:
            route += format_html("<div><strong>{}</strong></div>", failover)
        return route

    @admin.display(description="recipients")
    def recipients_display(self, obj: EmailJob) -> SafeString:
        """To, Cc, Bcc and Reply-To lists."""
        rows = [
            (label, ", ".join(addresses))
            for label, addresses in (
                ("To", obj.to),
                ("Cc", obj.cc),
                ("Bcc", obj.bcc),
                ("Reply-To", obj.reply_to),
            )
            if addresses
        ]
        return format_html_join("", "<div><strong>{}:</strong> {}</div>", rows)

    @admin.display(description="batch")
    def batch_link(self, obj: EmailJob) -> SafeString | str:
        """The batch, and a link to all of its emails."""
        if not obj.batch_id:
            return "-"
        return format_html(
            '<a href="{}">{}</a> (<a href="{}">all emails of this batch</a>)',
            reverse("admin:mailqueue_batch_change", args=[obj.batch_id]),
            obj.batch_id,
            email_changelist_url(batch__id__exact=str(obj.batch_id)),
        )

    @admin.display(description="client")
    def client_link(self, obj: EmailJob) -> SafeString | str:
        """The client that sent the email."""
        return admin_change_link(obj.client)

    @admin.display(description="API key")
    def api_key_link(self, obj: EmailJob) -> SafeString | str:
        """The API key used, if any."""
        if not obj.api_key_id:
            return "-"
        return admin_change_link(obj.api_key)

    @admin.display(description="RQ job id")
    def rq_job_display(self, obj: EmailJob) -> SafeString | str:
        """The RQ job that delivers the email, linked to its page in the django-rq dashboard."""
        if not obj.rq_job_id:
            return "-"
        try:
            url = reverse(
                "django_rq:job_detail",
                args=[get_queues_map().get(obj.priority, 0), obj.rq_job_id],
            )
        except NoReverseMatch:
            return obj.rq_job_id
        return format_html('<a href="{}">{}</a>', url, obj.rq_job_id)

    @admin.display(description="tags")
    def tags_display(self, obj: EmailJob) -> str:
        """Tags, comma-separated."""
        return ", ".join(obj.tags) or "-"

    @admin.display(description="metadata")
    def metadata_display(self, obj: EmailJob) -> SafeString:
        """Metadata as indented JSON."""
        return pretty_json(obj.metadata)

    @admin.display(description="context")
    def context_display(self, obj: EmailJob) -> SafeString:
        """Template context as indented JSON, secret values (a one-time code) masked."""
        if obj.secret_context_keys:
            return pretty_json(context_redact(context=obj.context, keys=obj.secret_context_keys))
        return pretty_json(obj.context)

    @admin.display(description="headers")
    def headers_display(self, obj: EmailJob) -> SafeString:
        """Custom headers as indented JSON."""
        return pretty_json(obj.headers)

    @admin.display(description="attachments")
    def attachments_display(self, obj: EmailJob) -> SafeString | str:
        """Attachment names and types (without loading their content)."""
        rows = obj.attachments.values_list("filename", "mimetype")
        return format_html_join(", ", "{} ({})", rows) or "-"

    @admin.display(description="template version")
    def template_version_link(self, obj: EmailJob) -> SafeString | str:
        """The exact template version the email is rendered with, linked to the template."""
        version = obj.template_version
        if version is None:
            if obj.template_id:
                return admin_change_link(
                    obj.template, f"{obj.template.slug} (version not recorded)"
                )
            return "none (raw content)"
        try:
            # A page of its own for versions, where the templates admin has one.
            url = reverse("admin:templates_app_emailtemplateversion_change", args=[version.pk])
        except NoReverseMatch:
            url = reverse("admin:templates_app_emailtemplate_change", args=[version.template_id])
        return format_html('<a href="{}">{} v{}</a>', url, version.template.slug, version.number)

    @admin.display(description="content")
    def content_display(self, obj: EmailJob) -> SafeString:
        """What went out, or for an email not yet sent, a preview rendered now."""
        if obj.status == EmailStatus.SENT:
            return rendered_parts(subject=obj.subject, html=obj.html, text=obj.text)
        try:
            content = email_render(email=obj)
        except MailqueueError as exc:
            where = f"{exc.field}: " if exc.field else ""
            return error_block(f"Cannot render this email: {where}{exc.message}")
        # The preview renders with the real context: a one-time code must not show.
        content = content_redact(content=content, secrets=email_secret_values(email=obj))
        return rendered_parts(
            subject=content.subject,
            html=content.html,
            text=content.text,
            note="Not sent yet: rendered now from the current template and context.",
        )
