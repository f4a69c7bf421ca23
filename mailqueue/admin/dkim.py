"""DKIM keys: add one (generated, or pasted), see the DNS records its domain needs."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from mailqueue import dkim
from mailqueue.errors import ValidationFailed
from mailqueue.models import DkimKey
from mailqueue.services.dkim_keys import dkim_key_check, dkim_key_create


class DkimKeyAddForm(forms.ModelForm):
    """Domain and selector; the private key may be left empty to generate one."""

    private_key = forms.CharField(
        widget=forms.Textarea,
        required=False,
        help_text="PEM RSA private key. Leave empty to generate a 2048-bit key.",
    )

    class Meta:
        model = DkimKey
        fields = ("domain", "selector", "private_key")

    def clean(self) -> dict[str, Any]:
        """Refuse a domain or key the service would refuse, on its field."""
        data = super().clean()
        try:
            dkim_key_check(domain=data.get("domain", ""), private_key=data.get("private_key", ""))
        except ValidationFailed as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return data


def _records_table(key: dkim.SigningKey) -> SafeString:
    rows = format_html_join(
        "",
        "<tr><td><code>{}</code></td><td>TXT</td><td><code>{}</code></td><td>{}</td></tr>",
        ((record.name, record.value, record.purpose) for record in dkim.dns_records(key)),
    )
    return format_html(
        '<table class="dkim-records"><tr><th>Name</th><th>Type</th><th>Value</th><th></th></tr>'
        "{}</table>",
        rows,
    )


@admin.register(DkimKey)
class DkimKeyAdmin(admin.ModelAdmin):
    """Keys the smtp provider signs with, and the DNS records to publish for them."""

    list_display = ("domain", "selector", "created_at")
    search_fields = ("domain",)
    readonly_fields = ("domain", "selector", "dns_records", "created_at")
    fields = readonly_fields

    def get_form(self, request: HttpRequest, obj: DkimKey | None = None, **kwargs: Any):
        """The add form takes a domain, a selector and an optional key; keys are not edited."""
        if obj is None:
            kwargs["form"] = DkimKeyAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: DkimKey | None = None) -> Any:
        """Add: the form's fields. Change: what to publish (the private key is never shown)."""
        return ("domain", "selector", "private_key") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: DkimKey | None = None) -> Any:
        """Nothing is read-only while adding."""
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: DkimKey | None = None) -> bool:
        """A key is replaced (delete, add), never edited: its DNS record would stop matching."""
        return False

    def save_model(self, request: HttpRequest, obj: DkimKey, form: Any, change: bool) -> None:
        """Create through the service (it generates the key when none was pasted)."""
        created = dkim_key_create(
            domain=form.cleaned_data["domain"],
            selector=form.cleaned_data["selector"],
            private_key=form.cleaned_data.get("private_key") or "",
        )
        obj.pk, obj.domain, obj.private_key = created.pk, created.domain, created.private_key

    @admin.display(description="DNS records to publish")
    def dns_records(self, obj: DkimKey) -> SafeString:
        """The DKIM TXT record of this key, and the SPF and DMARC records of its domain."""
        return _records_table(dkim.SigningKey(obj.domain, obj.selector, obj.private_key.encode()))

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        """Also list the keys configured in MAILQUEUE_DKIM_KEYS, with their records."""
        try:
            configured = [(key, _records_table(key)) for key in dkim.configured_keys()]
        except Exception as exc:  # a misconfigured setting is shown, not a 500
            configured = []
            messages.error(request, str(exc))
        extra_context = {**(extra_context or {}), "configured_keys": configured}
        return super().changelist_view(request, extra_context)
