"""The suppression list in the admin: list, search, add and remove entries (service-wide ones
too: only operators may), import and export CSV. Every write calls a suppression service."""

import io
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from mailqueue.admin.helpers import admin_url
from mailqueue.errors import ValidationFailed
from mailqueue.models import Client, Suppression, SuppressionReason
from mailqueue.services.suppressions import (
    SERVICE_WIDE_REASONS,
    NewSuppression,
    suppressions_add,
    suppressions_delete,
    suppressions_export_csv,
    suppressions_import_csv,
)
from mailqueue.validation import address_spec, normalize_address

# Largest CSV file the import reads (about a million short rows).
IMPORT_MAX_BYTES = 50 * 1024 * 1024


class SuppressionAddForm(forms.ModelForm):
    """A new entry: hard bounces and complaints are service-wide, the others need a client."""

    class Meta:
        model = Suppression
        fields = ("address", "reason", "client", "topic")

    def clean_address(self) -> str:
        """The bare lowercased address."""
        try:
            return address_spec(normalize_address(self.cleaned_data["address"], field="address"))
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message) from None

    def clean(self) -> dict:
        """A client for unsubscribes and manual entries; none for service-wide reasons."""
        data = super().clean()
        reason = data.get("reason")
        if reason in SERVICE_WIDE_REASONS:
            data["client"] = None
        elif reason and not data.get("client"):
            self.add_error("client", "Unsubscribes and manual entries belong to one client.")
        return data


class SuppressionImportForm(forms.Form):
    """A CSV file with a header row: address, and optionally reason, client, topic."""

    file = forms.FileField(help_text="Columns: address, reason (default manual), client, topic.")
    client = forms.ModelChoiceField(
        Client.objects.all(), required=False, help_text="For rows that name no client."
    )


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """Addresses Mailqueue does not send to, and why."""

    list_display = ("address", "reason", "client", "topic", "created_at")
    list_filter = ("reason",)
    list_select_related = ("client",)
    search_fields = ("address",)
    search_help_text = "An exact address, or the start of one."
    actions = ["export_csv"]
    form = SuppressionAddForm
    readonly_fields = ("source_event", "created_at")
    raw_id_fields = ("client",)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Addresses are stored lowercased: an exact or prefix match serves any table size."""
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        return queryset.filter(address__startswith=term), False

    def get_readonly_fields(self, request: HttpRequest, obj: Suppression | None = None) -> tuple:
        """Entries are added or removed, never edited."""
        if obj is not None:
            return ("address", "reason", "client", "topic", *self.readonly_fields)
        return self.readonly_fields

    def get_fields(self, request: HttpRequest, obj: Suppression | None = None) -> tuple:
        """The entry's fields (and, once it exists, where it came from)."""
        fields = ("address", "reason", "client", "topic")
        return fields if obj is None else (*fields, *self.readonly_fields)

    def has_change_permission(self, request: HttpRequest, obj: Suppression | None = None) -> bool:
        """Shown read-only: to change an entry, remove it and add another."""
        return False if obj is not None else super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        """Add through the service (an entry already there is kept)."""
        suppressions_add(
            entries=[
                NewSuppression(
                    address=obj.address, reason=obj.reason, client=obj.client, topic=obj.topic
                )
            ]
        )
        saved = Suppression.objects.filter(
            address=obj.address,
            reason=obj.reason,
            topic=obj.topic,
            client=None if obj.reason in SERVICE_WIDE_REASONS else obj.client,
        ).first()
        if saved is not None:
            obj.pk, obj.created_at = saved.pk, saved.created_at

    def delete_model(self, request: HttpRequest, obj: Suppression) -> None:
        """Remove one entry through the service."""
        suppressions_delete(entries=Suppression.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Remove the selected entries through the service."""
        suppressions_delete(entries=queryset)

    @admin.action(description="Export selected entries as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        """The selected entries as a CSV file the import reads back."""
        return self._csv_response(queryset)

    def _csv_response(self, queryset: QuerySet) -> StreamingHttpResponse:
        rows = queryset.select_related("client").order_by("pk").iterator(chunk_size=2000)
        response = StreamingHttpResponse(
            suppressions_export_csv(entries=rows), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = 'attachment; filename="suppressions.csv"'
        return response

    def get_urls(self) -> list:
        """The import and full-export pages before the default ones."""
        return [
            admin_url(self, "import/", self.import_view, "import"),
            admin_url(self, "export/", self.export_view, "export"),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest) -> StreamingHttpResponse:
        """Every entry (or those the list's filters select) as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        queryset = Suppression.objects.all()
        reason = request.GET.get("reason__exact")
        if reason in SuppressionReason.values:
            queryset = queryset.filter(reason=reason)
        return self._csv_response(queryset)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a CSV file of entries; refused rows are listed, the rest added."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = SuppressionImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            if upload.size > IMPORT_MAX_BYTES:
                form.add_error("file", f"The file is larger than {IMPORT_MAX_BYTES} bytes.")
            else:
                text = io.TextIOWrapper(upload.file, encoding="utf-8-sig", errors="replace")
                result = suppressions_import_csv(lines=text, client=form.cleaned_data["client"])
                self.message_user(request, f"{result.added} entries added (or already there).")
                for error in result.errors[:20]:
                    self.message_user(request, error, messages.WARNING)
                if len(result.errors) > 20:
                    self.message_user(
                        request,
                        f"…and {len(result.errors) - 20} more refused rows.",
                        messages.WARNING,
                    )
                return HttpResponseRedirect(reverse("admin:mailqueue_suppression_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "title": "Import suppressions from CSV",
        }
        return TemplateResponse(request, "admin/mailqueue/suppression/import.html", context)
