"""Sender domains: which domains each client may send from, the TXT record that verifies one,
and the operator's actions (check DNS now, mark verified by hand)."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from mailqueue.errors import ValidationFailed
from mailqueue.models import SenderDomain
from mailqueue.services.sender_domains import (
    SenderDomainNotVerified,
    SenderDomainTaken,
    domain_normalize,
    domain_unicode,
    sender_domain_create,
    sender_domain_txt_record,
    sender_domain_verify_dns,
    sender_domain_verify_operator,
)


class SenderDomainAddForm(forms.ModelForm):
    """A client and a domain; the token is generated."""

    class Meta:
        model = SenderDomain
        fields = ("client", "domain")

    def clean_domain(self) -> str:
        """The stored form of the domain, or the service's reason on the field."""
        try:
            return domain_normalize(self.cleaned_data.get("domain", ""))
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message) from None


class VerifiedFilter(admin.SimpleListFilter):
    """Verified (by DNS or an operator) or not yet."""

    title = "verified"
    parameter_name = "verified"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """Yes or no."""
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """Filter on verified_at being set."""
        if self.value() in ("yes", "no"):
            return queryset.filter(verified_at__isnull=self.value() == "no")
        return queryset


@admin.register(SenderDomain)
class SenderDomainAdmin(admin.ModelAdmin):
    """A client's sender domains; a from_email or reply_to elsewhere is refused (400)."""

    list_display = ("domain", "unicode_domain", "client", "verified", "verified_by", "created_at")
    list_filter = (VerifiedFilter, "verified_by", "client")
    list_select_related = ("client",)
    search_fields = ("domain", "client__name")
    actions = ("check_dns_now", "mark_verified_by_operator")
    readonly_fields = (
        "client",
        "domain",
        "unicode_domain",
        "verified_at",
        "verified_by",
        "txt_record",
        "created_at",
    )

    def get_form(self, request: HttpRequest, obj: SenderDomain | None = None, **kwargs: Any):
        """The add form takes a client and a domain; a domain is never edited."""
        if obj is None:
            kwargs["form"] = SenderDomainAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: SenderDomain | None = None) -> Any:
        """Add: client and domain. Change: its state and the record to publish."""
        return ("client", "domain") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: SenderDomain | None = None) -> Any:
        """Nothing is read-only while adding."""
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: SenderDomain | None = None) -> bool:
        """Viewable, not editable: the state changes only through the actions."""
        return False if obj is not None else super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: SenderDomain, form: Any, change: bool) -> None:
        """Create through the service (it normalizes the domain and refuses a duplicate)."""
        try:
            created = sender_domain_create(
                client=form.cleaned_data["client"], domain=form.cleaned_data["domain"]
            )
        except SenderDomainTaken as exc:
            # The form's unique check ran before; this is a concurrent add of the same domain.
            messages.error(request, exc.message)
            created = SenderDomain.objects.get(
                client=form.cleaned_data["client"], domain=form.cleaned_data["domain"]
            )
        obj.pk, obj.verification_token = created.pk, created.verification_token

    @admin.display(description="Unicode")
    def unicode_domain(self, obj: SenderDomain) -> str:
        """The domain as people write it, when it is internationalized."""
        shown = domain_unicode(obj.domain)
        return shown if shown != obj.domain else ""

    @admin.display(boolean=True, description="Verified", ordering="verified_at")
    def verified(self, obj: SenderDomain) -> bool:
        """Whether the client may send from it."""
        return obj.verified_at is not None

    @admin.display(description="TXT record to publish")
    def txt_record(self, obj: SenderDomain) -> SafeString:
        """Name, type and value of the record that verifies the client's claim."""
        record = sender_domain_txt_record(sender_domain=obj)
        return format_html(
            "<code>{}</code> TXT <code>{}</code>",
            record.name,
            record.value,
        )

    @admin.action(description="Check DNS now")
    def check_dns_now(self, request: HttpRequest, queryset: QuerySet[SenderDomain]) -> None:
        """Look each selected domain's TXT record up now; say what was found for each."""
        for sender_domain in queryset.select_related("client"):
            label = f"{sender_domain.domain} ({sender_domain.client.name})"
            try:
                sender_domain_verify_dns(sender_domain=sender_domain)
            except SenderDomainNotVerified as exc:
                messages.warning(request, f"Not verified: {label}: {exc.message}")
            else:
                messages.success(request, f"Verified by its DNS TXT record: {label}.")

    @admin.action(description="Mark verified by operator")
    def mark_verified_by_operator(
        self, request: HttpRequest, queryset: QuerySet[SenderDomain]
    ) -> None:
        """Vouch for the selected domains: their clients may send from them."""
        count = 0
        for sender_domain in queryset:
            sender_domain_verify_operator(sender_domain=sender_domain)
            count += 1
        messages.success(request, f"{count} sender domain(s) marked verified by an operator.")
