"""Serializer fields for addresses, headers, JSON objects and zone-aware datetimes."""

from datetime import UTC, datetime, timedelta

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from mailqueue.errors import ValidationFailed
from mailqueue.validation import (
    FORBIDDEN_DESCRIPTION,
    has_forbidden_chars,
    normalize_address,
    normalize_address_list,
)

# What a schema can say about an address; the full check (Django's validate_email) is a 400.
ADDRESS_SCHEMA = {
    "type": "string",
    "minLength": 3,
    "pattern": "@",
    "example": "Ada Lovelace <ada@example.com>",
}


@extend_schema_field({**ADDRESS_SCHEMA, "maxLength": 320})
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
        """The address exactly as it was stored (display name included)."""
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
        """The addresses exactly as they were stored."""
        return value


class SingleLineCharField(serializers.CharField):
    """A string that goes into a header: CR, LF, NUL, other control characters but tab, and
    the Unicode line separators are refused."""

    def to_internal_value(self, data: object) -> str:
        """Refuse non-strings (DRF would turn 0 into "0") and header injection."""
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.")
        value = super().to_internal_value(data)
        if has_forbidden_chars(value):
            raise serializers.ValidationError(f"May not contain {FORBIDDEN_DESCRIPTION}.")
        return value


# PostgreSQL refuses a UTC offset of 16 hours or more ("time zone displacement out of range").
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59, seconds=59)
# Years whose every instant, at any offset above, still converts to a UTC datetime Python and
# PostgreSQL can hold (9999-12-31T23:00-02:00 is year 10000 in UTC, an OverflowError).
MIN_YEAR, MAX_YEAR = 2, 9998
# The same limits as a pattern, so that a client generated from the schema never sends a time
# the server refuses: a year from 0002 to 9998, then `Z` or an offset within +-15:59(:59).
AWARE_DATETIME_PATTERN = (
    r"^(000[2-9]|00[1-9]\d|0[1-9]\d\d|[1-8]\d{3}|9[0-8]\d\d|99[0-8]\d|999[0-8])-"
    r".*([Zz]|[+-](0\d|1[0-5]):?[0-5]\d(:?[0-5]\d)?)$"
)


@extend_schema_field(
    {
        "type": "string",
        "format": "date-time",
        "pattern": AWARE_DATETIME_PATTERN,
        "example": "2026-12-01T09:30:00Z",
    }
)
class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 datetime with a time zone, within the range every layer below can store.

    A naive time is refused rather than guessed; an offset beyond PostgreSQL's +-15:59:59 or a
    year outside 0002-9998 is a 400 naming the field, never a database or overflow error.
    The value comes back in UTC.
    """

    def to_internal_value(self, value: object) -> datetime:
        """Parse, then refuse naive or out-of-range times."""
        if not isinstance(value, str):
            raise serializers.ValidationError(
                "Must be an ISO 8601 datetime string with a time zone."
            )
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
        if parsed is None:
            raise serializers.ValidationError(
                "Not an ISO 8601 datetime, e.g. 2026-12-01T09:30:00Z."
            )
        offset = parsed.utcoffset()
        if offset is None:
            raise serializers.ValidationError(
                "Must include a time zone, e.g. 2026-12-01T09:30:00Z or +02:00."
            )
        if abs(offset) > MAX_UTC_OFFSET:
            raise serializers.ValidationError(
                "UTC offset out of range: at most 15:59:59 ahead of or behind UTC."
            )
        if not MIN_YEAR <= parsed.year <= MAX_YEAR:
            raise serializers.ValidationError(
                f"Year out of range: from {MIN_YEAR:04} to {MAX_YEAR}."
            )
        return parsed.astimezone(UTC)


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(serializers.JSONField):
    """A JSON object (keys to any JSON value); a list, string or number is a 400."""

    default_error_messages = {"not_an_object": "Must be a JSON object."}

    def to_internal_value(self, data: object) -> dict:
        """Parse as JSON, then insist on an object."""
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_an_object")
        return value
