"""Serializer fields for addresses, headers and zone-aware datetimes."""

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from mailqueue.errors import ValidationFailed
from mailqueue.validation import has_forbidden_chars, normalize_address, normalize_address_list

ADDRESS_SCHEMA = {"type": "string", "example": "Ada Lovelace <ada@example.com>"}


@extend_schema_field(ADDRESS_SCHEMA)
class AddressField(serializers.Field):
    """One email address, `a@b.c` or `Name <a@b.c>`."""

    # The column it is stored in (EmailJob.from_email); longer would be a database error.
    max_length = 320

    def to_internal_value(self, data: object) -> str:
        """Validate and canonicalize."""
        try:
            address = normalize_address(data, field=self.field_name)
        except ValidationFailed as exc:
            raise serializers.ValidationError(exc.message) from None
        if len(address) > self.max_length:
            raise serializers.ValidationError(
                f"Too long: at most {self.max_length} characters including the display name."
            )
        return address

    def to_representation(self, value: str) -> str:
        """As stored."""
        return value


@extend_schema_field({"oneOf": [ADDRESS_SCHEMA, {"type": "array", "items": ADDRESS_SCHEMA}]})
class AddressListField(serializers.Field):
    """One address or a list of them; always a list once validated."""

    def to_internal_value(self, data: object) -> list[str]:
        """Validate each item; the message names the bad item's index."""
        try:
            return normalize_address_list(data, field=self.field_name)
        except ValidationFailed as exc:
            raise serializers.ValidationError(f"{exc.field}: {exc.message}") from None

    def to_representation(self, value: list[str]) -> list[str]:
        """As stored."""
        return value


class SingleLineCharField(serializers.CharField):
    """A string that goes into a header: CR, LF and NUL are refused."""

    def to_internal_value(self, data: object) -> str:
        """Refuse header injection."""
        value = super().to_internal_value(data)
        if has_forbidden_chars(value):
            raise serializers.ValidationError("May not contain CR, LF or NUL characters.")
        return value


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 datetime that must carry a time zone (a naive time is ambiguous)."""

    def to_internal_value(self, value: object):
        """Refuse naive datetimes instead of guessing the zone."""
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
            if parsed is None:
                raise serializers.ValidationError(
                    "Not an ISO 8601 datetime, e.g. 2026-12-01T09:30:00Z."
                )
            if parsed.tzinfo is None:
                raise serializers.ValidationError(
                    "Must include a time zone, e.g. 2026-12-01T09:30:00Z or +02:00."
                )
            return parsed
        raise serializers.ValidationError("Must be an ISO 8601 datetime string with a time zone.")
