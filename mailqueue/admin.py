"""Admin for emails, batches, clients, API keys and the capture inbox.

Every change goes through a service (retry, cancel, key creation and revocation); the email
pages are read-only and stay fast on tables with millions of rows.
"""

import contextlib
import uuid
from email import message_from_string
from email import policy as email_policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage as MimeMessage
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from mailqueue.admin_utils import (
    EstimatedCountPaginator,
    LightChangeListMixin,
    admin_change_link,
    copy_saved_instance,
    error_block,
    pk_chunks,
    preformatted,
    pretty_json,
    rendered_parts,
    sandboxed_html,
)
from mailqueue.errors import InvalidTransition, MailqueueError
from mailqueue.models import (
    ApiKey,
    Batch,
    CapturedMessage,
    Client,
    DeliveryAttempt,
    EmailJob,
    EmailStatus,
)
from mailqueue.selectors import batch_status_counts
from mailqueue.services import (
    api_key_create,
    api_key_revoke,
    api_key_update,
    email_cancel,
    email_retry,
    emails_cancel_many,
    emails_retry_many,
)
from mailqueue.services.delivery import email_render
from mailqueue.services.emails import CANCELLABLE, RETRYABLE
from mailqueue.validation import address_spec
from templates_app.models import EmailTemplate
from tracking.models import TrackingEvent

admin.site.site_header = "Mailqueue"
admin.site.site_title = "Mailqueue admin"
admin.site.index_title = "Outbox, templates and API keys"

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


def email_changelist_url(**params: str) -> str:
    """The email list URL, filtered by query parameters."""
    url = reverse("admin:mailqueue_emailjob_changelist")
    return f"{url}?{urlencode(params)}" if params else url


class ReadOnlyAdminMixin:
    """No add; the detail page is view-only (changes happen through actions and services)."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Rows are created by the API and the workers, never by hand."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Model-level change permission (for actions), but every object is view-only."""
        if obj is not None:
            return False
        return super().has_change_permission(request)


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


class DeliveryAttemptInline(admin.TabularInline):
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

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Attempts are append-only rows written by the worker."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Attempts are never edited."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Attempts are never deleted by hand."""
        return False


class TrackingEventInline(admin.TabularInline):
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

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Events are append-only rows written by services."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Events are never edited."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Events are never deleted by hand."""
        return False


@admin.register(EmailJob)
class EmailJobAdmin(LightChangeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
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
    actions = ("retry_selected", "cancel_selected")
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
                    "batch_link",
                    "client_link",
                    "api_key_link",
                    "provider",
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

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Search with indexed lookups only: exact id, exact address, or address prefix."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            pass
        spec = address_spec(term) if "@" in term else ""
        if spec:
            try:
                validate_email(spec)
            except ValidationError:
                spec = ""
        if spec:
            return queryset.filter(recipient=spec), False
        # A prefix, never icontains: `LIKE 'x%'` can use an index, `LIKE '%x%'` scans the table.
        return queryset.filter(recipient__startswith=term.lower()), False

    def get_urls(self) -> list:
        """The default URLs plus POST-only retry and cancel of one email."""
        info = self.opts.app_label, self.opts.model_name
        custom = [
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name="{}_{}_retry".format(*info),
            ),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="{}_{}_cancel".format(*info),
            ),
        ]
        return custom + super().get_urls()

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The list, naming the batch when it is filtered by one."""
        extra_context = {"title": "Emails", **(extra_context or {})}
        batch_id = request.GET.get("batch__id__exact")
        if batch_id:
            # A malformed id is reported by the change list itself (it cannot filter by it).
            with contextlib.suppress(ValueError):
                extra_context["filtered_batch"] = Batch.objects.filter(
                    pk=uuid.UUID(batch_id)
                ).first()
        return super().changelist_view(request, extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The read-only detail, with retry/cancel buttons when the status allows them."""
        extra_context = extra_context or {}
        email = self.get_object(request, unquote(object_id))
        if email is not None and self.has_change_permission(request):
            extra_context["can_retry"] = email.status in RETRYABLE
            extra_context["can_cancel"] = email.status in CANCELLABLE
        return super().change_view(request, object_id, form_url, extra_context)

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
        changed = skipped = 0
        for chunk in pk_chunks(queryset):
            result = emails_retry_many(email_ids=chunk)
            changed += result.changed
            skipped += result.skipped
        self.message_user(
            request,
            f"Retried {changed} email(s); skipped {skipped} that were not failed or cancelled.",
            messages.SUCCESS if changed else messages.WARNING,
        )

    @admin.action(description="Cancel selected emails", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Cancel the scheduled, queued and retrying emails among the selection, 1000 at a time."""
        changed = skipped = 0
        for chunk in pk_chunks(queryset):
            result = emails_cancel_many(email_ids=chunk)
            changed += result.changed
            skipped += result.skipped
        self.message_user(
            request,
            f"Cancelled {changed} email(s); skipped {skipped} that were not scheduled, queued "
            "or retrying.",
            messages.SUCCESS if changed else messages.WARNING,
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
    def rq_job_display(self, obj: EmailJob) -> str:
        """The id of the RQ job that delivers the email (look it up in the queues dashboard)."""
        return obj.rq_job_id or "-"

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
        """Template context as indented JSON."""
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
        return rendered_parts(
            subject=content.subject,
            html=content.html,
            text=content.text,
            note="Not sent yet: rendered now from the current template and context.",
        )


@admin.register(Batch)
class BatchAdmin(LightChangeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Batches: how far along their emails are, and a link to them."""

    list_display = ("id", "client", "template", "count", "priority", "created_at")
    list_select_related = ("client", "template")
    list_filter = ("priority",)
    sortable_by = ("created_at",)
    search_fields = ("=id",)
    search_help_text = "Batch id (UUID)."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    changelist_defer = ("context", "template__html", "template__text", "template__sample_context")
    readonly_fields = (
        "id",
        "client",
        "template",
        "count",
        "priority",
        "send_at",
        "tags",
        "created_at",
        "context_display",
        "status_counts",
        "emails_link",
    )
    fields = readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Only superusers may delete batches (deleting one deletes its emails)."""
        return request.user.is_superuser

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Find a batch by its exact id; anything that is not a UUID finds nothing."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            return queryset.none(), False

    @admin.display(description="context")
    def context_display(self, obj: Batch) -> SafeString:
        """The context shared by every email of the batch."""
        return pretty_json(obj.context)

    @admin.display(description="emails by status")
    def status_counts(self, obj: Batch) -> SafeString:
        """How many of the batch's emails are in each status, each linking to them."""
        counts = batch_status_counts(batch=obj)
        return format_html_join(
            "",
            '<div><a href="{}">{}</a>: {}</div>',
            (
                (
                    email_changelist_url(batch__id__exact=str(obj.pk), status__exact=status),
                    status,
                    count,
                )
                for status, count in counts.items()
            ),
        )

    @admin.display(description="emails")
    def emails_link(self, obj: Batch) -> SafeString:
        """All emails of the batch."""
        return format_html(
            '<a href="{}">Show the {} email(s) of this batch</a>',
            email_changelist_url(batch__id__exact=str(obj.pk)),
            obj.count,
        )


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    """Calling services; each owns API keys, emails and batches."""

    list_display = ("name", "created_at", "keys_link", "emails_link")
    search_fields = ("name",)
    readonly_fields = ("created_at", "keys_link", "emails_link")
    fields = ("name", *readonly_fields)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        """No bulk delete: its confirmation page would list every email of the clients."""
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: Client | None = None) -> bool:
        """Only clients that never sent anything (emails and batches keep theirs)."""
        if obj is not None and (obj.emails.exists() or obj.batches.exists()):
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="API keys")
    def keys_link(self, obj: Client) -> SafeString | str:
        """The client's API keys."""
        if obj.pk is None:
            return "-"
        url = reverse("admin:mailqueue_apikey_changelist")
        return format_html('<a href="{}?client__id__exact={}">API keys</a>', url, obj.pk)

    @admin.display(description="emails")
    def emails_link(self, obj: Client) -> SafeString | str:
        """The client's emails."""
        if obj.pk is None:
            return "-"
        return format_html(
            '<a href="{}">Emails</a>', email_changelist_url(client__id__exact=str(obj.pk))
        )


class ScopesField(forms.MultipleChoiceField):
    """API key scopes as checkboxes; at least one is required."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs: Any) -> None:
        """A checkbox per ApiKey.Scope."""
        super().__init__(choices=ApiKey.Scope.choices, **kwargs)

    def clean(self, value: Any) -> list[str]:
        """The chosen scopes, sorted as api_key_create stores them."""
        return sorted(super().clean(value))


class ApiKeyCreateForm(forms.ModelForm):
    """A new key: the key itself is generated by api_key_create when the form is saved."""

    scopes = ScopesField(help_text="What the key may do.")

    class Meta:
        model = ApiKey
        fields = ("client", "name", "scopes")


class ApiKeyChangeForm(forms.ModelForm):
    """An existing key: label, scopes and whether it is active."""

    scopes = ScopesField(help_text="What the key may do.")

    class Meta:
        model = ApiKey
        fields = ("name", "scopes", "is_active")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """API keys: created through api_key_create (plaintext shown once), revoked in bulk."""

    list_display = (
        "key_display",
        "client",
        "name",
        "scopes_display",
        "is_active",
        "last_used_at",
        "created_at",
    )
    list_select_related = ("client",)
    list_filter = ("is_active", "client")
    search_fields = ("name", "prefix", "client__name")
    actions = ("revoke_selected",)

    def get_form(
        self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        """The create form for a new key, the change form otherwise."""
        kwargs["form"] = ApiKeyChangeForm if obj is not None else ApiKeyCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        """The key hash is never shown; the prefix identifies the key."""
        if obj is None:
            return ["client", "name", "scopes"]
        return [
            "key_display",
            "client",
            "name",
            "scopes",
            "is_active",
            "last_used_at",
            "created_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        """Identity and usage are read-only; a key cannot move to another client."""
        if obj is None:
            return []
        return ["key_display", "client", "last_used_at", "created_at"]

    def save_model(
        self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool
    ) -> None:
        """Create keys through the service and show the plaintext once; edit only form fields."""
        if change:
            changed = {
                name: form.cleaned_data[name]
                for name in form.changed_data
                if name in ("name", "scopes", "is_active")
            }
            api_key_update(api_key=obj, **changed)
            return
        issued = api_key_create(
            client_name=form.cleaned_data["client"].name,
            scopes=form.cleaned_data["scopes"],
            name=form.cleaned_data["name"],
        )
        copy_saved_instance(target=obj, saved=issued.api_key)
        messages.success(
            request,
            format_html(
                "New API key for {}: <code>{}</code> — copy it now. It is not stored and will "
                "not be shown again.",
                issued.api_key.client.name,
                issued.plaintext,
            ),
        )

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Deactivate every selected key."""
        revoked = 0
        for api_key in queryset.filter(is_active=True):
            api_key_revoke(api_key=api_key)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)

    @admin.display(description="key", ordering="prefix")
    def key_display(self, obj: ApiKey) -> str:
        """The key's public part; the secret is never stored."""
        return f"mq_{obj.prefix}_…"

    @admin.display(description="scopes")
    def scopes_display(self, obj: ApiKey) -> str:
        """Scopes, comma-separated."""
        return ", ".join(obj.scopes)


@admin.register(CapturedMessage)
class CapturedMessageAdmin(LightChangeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The capture inbox: what the `capture` provider would have sent, exactly as MIME."""

    list_display = ("created_at", "to_display", "subject_display", "from_email", "email_link")
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
        return part.get_content()

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
        if not obj.email_id:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:mailqueue_emailjob_change", args=[obj.email_id]),
            obj.email_id,
        )

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
