"""Reads of one-time codes."""

from django.db.models import QuerySet

from mailqueue.validation import address_spec
from otp.models import OneTimeCode


def codes_of_address(*, address: str) -> QuerySet[OneTimeCode]:
    """Every client's codes sent to an address (for export and erasure), newest first."""
    return OneTimeCode.objects.filter(address=address_spec(address)).order_by("-created_at")
