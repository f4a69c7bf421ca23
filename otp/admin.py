"""Read-only admin of one-time codes: who was sent a code, when, and what became of it (never
the code, nor its hash)."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from mailqueue.admin.helpers import EstimatedCountPaginator, ReadOnlyAdminMixin
from otp.models import OneTimeCode

# Every column but the hash.
SHOWN_FIELDS = (
    "address",
    "purpose",
    "client",
    "email",
    "created_at",
    "expires_at",
    "failed_attempts",
    "verified_at",
    "replaced_at",
)


@admin.register(OneTimeCode)
class OneTimeCodeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Codes issued, newest first; read-only."""

    list_display = (
        "address",
        "purpose",
        "client",
        "created_at",
        "expires_at",
        "failed_attempts",
        "state",
    )
    list_filter = ("purpose",)
    list_select_related = ("client",)
    search_fields = ("address",)
    search_help_text = "An exact address, or the start of one."
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    fields = SHOWN_FIELDS
    readonly_fields = SHOWN_FIELDS
    raw_id_fields = ("email",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Without the hash: it is never shown, so it is never read."""
        return super().get_queryset(request).defer("code_hash")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Addresses are stored lowercased: an exact or prefix match uses the index."""
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        return queryset.filter(address__startswith=term), False

    @admin.display(description="state")
    def state(self, obj: OneTimeCode) -> str:
        """Verified, replaced, expired or pending."""
        if obj.verified_at:
            return "verified"
        if obj.replaced_at:
            return "replaced"
        if obj.expires_at <= timezone.now():
            return "expired"
        return "pending"
