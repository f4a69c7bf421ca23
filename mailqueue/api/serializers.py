"""Input and output serializers of the email and batch API, one pair per operation."""

import mimetypes

from django.core.validators import MaxLengthValidator, MinLengthValidator
from django.utils.functional import cached_property
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from mailqueue import conf
from mailqueue.api.fields import (
    AddressField,
    AddressListField,
    AwareDateTimeField,
    JSONObjectField,
    SingleLineCharField,
)
from mailqueue.errors import ValidationFailed
from mailqueue.models import Batch, DeliveryAttempt, EmailJob, EmailStatus, Priority
from mailqueue.validation import CONTENT_ID_PATTERN, validate_headers
from tracking.models import EventType, TrackingEvent


class SharedFieldsMixin:
    """Builds a serializer class's fields once and shares them between its instances.

    DRF deep-copies every field for every serializer instance (and a ModelSerializer first
    inspects the model again), so that one instance may change its own fields; on the
    POST /emails/ path that copying cost more than validating and answering. Only for
    serializers whose fields keep no state between calls and read neither `context` nor
    `partial`: the shared fields see an empty context.
    """

    @cached_property
    def fields(self) -> serializers.BindingDict:
        """The class's fields, bound once to a prototype instance of the class."""
        cls = type(self)
        shared = cls.__dict__.get("_shared_fields")
        if shared is None:
            prototype = cls()
            shared = serializers.BindingDict(prototype)
            for name, field in prototype.get_fields().items():
                shared[name] = field
            # A race between two threads builds the fields twice; both results are the same.
            cls._shared_fields = shared
        return shared


class StrictSerializer(serializers.Serializer):
    """Refuses unknown fields and non-string text, so the body means what the schema says.

    A typo such as `tempalte` is a 400, not silently ignored; `"text": 0` is a 400, not the
    text "0" (DRF's CharField would turn a number into a string).
    """

    def to_internal_value(self, data):
        """Check for unknown keys and non-string text before validating the known fields."""
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        not_text = sorted(
            name
            for name, field in self.fields.items()
            if isinstance(field, serializers.CharField)
            and data.get(name) is not None
            and not isinstance(data[name], str)
        )
        if not_text:
            raise serializers.ValidationError({name: ["Must be a string."] for name in not_text})
        return super().to_internal_value(data)


class AttachmentInputSerializer(StrictSerializer):
    """An attachment: file name, base64 content, optional MIME type (guessed from the name)."""

    filename = SingleLineCharField(max_length=255)
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)
    mimetype = SingleLineCharField(max_length=255, required=False)
    # Makes the attachment an inline part the HTML shows with <img src="cid:...">.
    content_id = serializers.RegexField(
        CONTENT_ID_PATTERN,
        max_length=250,
        required=False,
        error_messages={
            "invalid": "Must be a Content-ID such as logo or logo@example.com: letters, digits "
            "and punctuation around at most one @, no spaces or angle brackets."
        },
    )

    def validate(self, attrs: dict) -> dict:
        """Decode the content and settle the MIME type."""
        from mailqueue.services import attachment_decode

        mimetype = attrs.get("mimetype") or (
            mimetypes.guess_type(attrs["filename"])[0] or "application/octet-stream"
        )
        if "/" not in mimetype:
            raise serializers.ValidationError({"mimetype": ["Must look like type/subtype."]})
        try:
            return {
                "attachment": attachment_decode(
                    filename=attrs["filename"],
                    content=attrs["content"],
                    mimetype=mimetype,
                    field="content",
                    content_id=attrs.get("content_id", ""),
                )
            }
        except ValidationFailed as exc:
            raise serializers.ValidationError({"content": [exc.message]}) from None


class EmailCreateInputSerializer(SharedFieldsMixin, StrictSerializer):
    """Body of POST /api/v1/emails/."""

    to = AddressListField()
    cc = AddressListField(required=False)
    bcc = AddressListField(required=False)
    reply_to = AddressListField(required=False)
    from_email = AddressField(required=False)
    template = serializers.SlugField(required=False, max_length=100)
    context = JSONObjectField(required=False)
    subject = SingleLineCharField(required=False, max_length=998, allow_blank=True)
    html = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.DEFAULT)
    send_at = AwareDateTimeField(required=False, allow_null=True)
    tags = serializers.ListField(
        child=SingleLineCharField(max_length=100), required=False, max_length=50
    )
    metadata = JSONObjectField(required=False)
    headers = JSONObjectField(required=False)
    attachments = AttachmentInputSerializer(many=True, required=False)
    topic = serializers.SlugField(required=False, max_length=100)
    transactional = serializers.BooleanField(required=False, allow_null=True, default=None)
    # Our own open/click tracking; null or absent: the template's choice, else the settings'.
    track_opens = serializers.BooleanField(required=False, allow_null=True, default=None)
    track_clicks = serializers.BooleanField(required=False, allow_null=True, default=None)

    def validate_to(self, value: list[str]) -> list[str]:
        """At least one To address."""
        if not value:
            raise serializers.ValidationError("At least one recipient is required.")
        return value

    def validate_headers(self, value: object) -> dict:
        """Only allow-listed custom headers, no header injection."""
        try:
            return validate_headers(value)
        except ValidationFailed as exc:
            raise serializers.ValidationError(f"{exc.field}: {exc.message}") from None

    def validate(self, attrs: dict) -> dict:
        """Template and raw content are exclusive; raw content needs a subject and a body."""
        errors = {}
        if attrs.get("template"):
            for name in ("subject", "html", "text"):
                if attrs.get(name):
                    errors[name] = [f"Do not combine '{name}' with 'template'."]
        else:
            if "context" in attrs:
                errors["context"] = ["'context' needs a 'template'."]
            if not attrs.get("subject"):
                errors["subject"] = ["Required unless a 'template' is given."]
            if not (attrs.get("html") or attrs.get("text")):
                errors["html"] = ["Give 'html' and/or 'text', or a 'template'."]
        total = sum(len(attrs.get(name) or []) for name in ("to", "cc", "bcc"))
        if total > conf.max_recipients():
            errors["to"] = [
                f"Too many recipients: {total} across to, cc and bcc "
                f"(the limit is {conf.max_recipients()})."
            ]
        if errors:
            raise serializers.ValidationError(errors)
        attrs["attachments"] = [item["attachment"] for item in attrs.get("attachments", [])]
        return attrs


class TrackingEventOutputSerializer(serializers.ModelSerializer):
    """One event in an email's history."""

    type = serializers.CharField(source="event_type")

    class Meta:
        model = TrackingEvent
        fields = [
            "type",
            "occurred_at",
            "provider",
            "recipient",
            "description",
            "data",
            # Reported by an ESP's webhook (empty for events of our own).
            "esp",
            "message_id",
            "reject_reason",
            "mta_response",
            "click_url",
            "user_agent",
        ]


class DeliveryAttemptOutputSerializer(serializers.ModelSerializer):
    """One try at one provider."""

    class Meta:
        model = DeliveryAttempt
        fields = [
            "number",
            "provider",
            "outcome",
            "error_class",
            "error_message",
            "started_at",
            "duration_ms",
        ]


class EmailListOutputSerializer(serializers.ModelSerializer):
    """An email in a list (no content, no history)."""

    template = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    batch = serializers.UUIDField(source="batch_id", read_only=True)

    class Meta:
        model = EmailJob
        fields = [
            "id",
            "status",
            "to",
            "cc",
            "bcc",
            "reply_to",
            "from_email",
            "subject",
            "template",
            "priority",
            "attempts",
            "max_attempts",
            "last_error",
            "send_at",
            "sent_at",
            "provider",
            "message_id",
            "batch",
            "tags",
            "metadata",
            "created_at",
            "updated_at",
        ]


class EmailAcceptedOutputSerializer(SharedFieldsMixin, EmailListOutputSerializer):
    """Answer to POST /api/v1/emails/ (same fields as a list item)."""


class EmailDetailOutputSerializer(EmailListOutputSerializer):
    """Everything about one email, with its events and delivery attempts."""

    events = TrackingEventOutputSerializer(many=True, read_only=True)
    delivery_attempts = DeliveryAttemptOutputSerializer(many=True, read_only=True)
    next_attempt_at = serializers.DateTimeField(read_only=True)

    class Meta(EmailListOutputSerializer.Meta):
        fields = [
            *EmailListOutputSerializer.Meta.fields,
            "topic",
            "transactional",
            "track_opens",
            "track_clicks",
            "next_attempt_at",
            "delivered_at",
            "opened_at",
            "clicked_at",
            "bounced_at",
            "complained_at",
            # The X-Request-ID of the request that created it ("" if not made by a request).
            "request_id",
            "events",
            "delivery_attempts",
        ]


class EmailListFilterSerializer(StrictSerializer):
    """Query parameters of GET /api/v1/emails/."""

    status = serializers.ChoiceField(choices=EmailStatus.choices, required=False)
    batch = serializers.UUIDField(required=False)
    to = serializers.CharField(required=False, max_length=320)
    tag = serializers.CharField(required=False, max_length=100)
    created_after = AwareDateTimeField(required=False)
    created_before = AwareDateTimeField(required=False)
    # Emails with at least one event of this type (e.g. `bounced`).
    event = serializers.ChoiceField(choices=EventType.choices, required=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)


class BatchRecipientListSerializer(serializers.ListSerializer):
    """A batch's recipients: from one to MAILQUEUE_BATCH_MAX, counted before any is validated."""

    def get_validators(self) -> list:
        """The count limits; the schema shows them as minItems and maxItems."""
        return [
            MinLengthValidator(1, "At least one recipient is required."),
            MaxLengthValidator(
                conf.batch_max,
                "Too many recipients: %(show_value)d (the limit is %(limit_value)d).",
            ),
        ]

    def to_internal_value(self, data: object) -> list:
        """Refuse a list of the wrong size before validating each of its items (cheap refusal)."""
        if isinstance(data, list):
            self.run_validators(data)
        return super().to_internal_value(data)


class BatchRecipientInputSerializer(StrictSerializer):
    """One recipient of a batch."""

    class Meta:
        list_serializer_class = BatchRecipientListSerializer

    to = AddressListField()
    context = JSONObjectField(required=False, default=dict)
    metadata = JSONObjectField(required=False, default=dict)

    def validate_to(self, value: list[str]) -> list[str]:
        """At least one address."""
        if not value:
            raise serializers.ValidationError("At least one recipient is required.")
        return value


class BatchCreateInputSerializer(StrictSerializer):
    """Body of POST /api/v1/batches/."""

    template = serializers.SlugField(max_length=100)
    context = JSONObjectField(required=False, default=dict)
    recipients = BatchRecipientInputSerializer(many=True)
    from_email = AddressField(required=False)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.DEFAULT)
    send_at = AwareDateTimeField(required=False, allow_null=True)
    tags = serializers.ListField(
        child=SingleLineCharField(max_length=100), required=False, max_length=50
    )
    topic = serializers.SlugField(required=False, max_length=100)
    transactional = serializers.BooleanField(required=False, allow_null=True, default=None)
    # Our own open/click tracking; null or absent: the template's choice, else the settings'.
    track_opens = serializers.BooleanField(required=False, allow_null=True, default=None)
    track_clicks = serializers.BooleanField(required=False, allow_null=True, default=None)


class BatchOutputSerializer(serializers.ModelSerializer):
    """A batch with how many of its emails are in each status."""

    template = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    status_counts = serializers.SerializerMethodField()
    schedule = serializers.SerializerMethodField()

    class Meta:
        model = Batch
        fields = [
            "id",
            "count",
            "template",
            "priority",
            "send_at",
            "tags",
            "status_counts",
            # A schedule's run: the schedule and the tick it ran for (null otherwise; `schedule`
            # is null too for a run of a topic's subscriber frequencies, whose implicit schedule
            # the API does not show).
            "schedule",
            "run_at",
            "created_at",
        ]

    def get_status_counts(self, batch: Batch) -> dict[str, int]:
        """Counts per status, every status present (zero when none)."""
        from mailqueue.selectors.batches import batch_status_counts

        return batch_status_counts(batch=batch)

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_schedule(self, batch: Batch) -> str | None:
        """The id of the schedule whose run this is, when the API shows that schedule."""
        from schedules.selectors import schedule_shown_id

        shown = schedule_shown_id(schedule_id=batch.schedule_id)
        return str(shown) if shown is not None else None
