"""Failed-email API (scope `admin`): failed emails grouped by error, retried or cancelled in bulk.

A key acts on its own client's emails; a key with `all_clients` on every client's. The same
filters select the emails of every operation; an empty body (or no query) means all of them.
"""

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.api.fields import AwareDateTimeField
from mailqueue.api.schema import field_errors_response
from mailqueue.api.serializers import StrictSerializer
from mailqueue.api.views import ScopedApiView
from mailqueue.models import ApiKey, Client, EmailStatus
from mailqueue.selectors.dead_letters import dead_letter_groups
from mailqueue.selectors.emails import email_list
from mailqueue.services.emails import emails_cancel_matching, emails_retry_matching

# Like the email list's pages: 50 groups unless asked, never more than 500.
GROUPS_DEFAULT = 50
GROUPS_MAX = 500


class UuidTextField(serializers.UUIDField):
    """A UUID written as text: a number (or a boolean) is refused, not read as a UUID's integer."""

    def to_internal_value(self, data: object) -> uuid.UUID:
        """The UUID of a string; anything else is invalid."""
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class FailedEmailFilterSerializer(StrictSerializer):
    """Which emails an operation acts on; every filter is optional and they combine with AND."""

    error_group = serializers.CharField(
        required=False, max_length=64, help_text="An error group key, as listed by GET."
    )
    batch = UuidTextField(required=False)
    template = serializers.SlugField(required=False, max_length=100, help_text="A template slug.")
    created_after = AwareDateTimeField(
        required=False, help_text="Emails accepted at or after this time."
    )
    created_before = AwareDateTimeField(
        required=False, help_text="Emails accepted before this time."
    )


class FailedGroupsFilterSerializer(FailedEmailFilterSerializer):
    """Query parameters of GET /api/v1/failed/: the filters and how many groups to list."""

    page_size = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=GROUPS_MAX,
        help_text=f"Groups to list, biggest first (default {GROUPS_DEFAULT}).",
    )


class FailedGroupOutputSerializer(serializers.Serializer):
    """Failed emails that share an error class and message shape."""

    error_group = serializers.CharField(source="key")
    error_class = serializers.CharField()
    sample_message = serializers.CharField(
        source="pattern",
        help_text="The latest error of the group, with addresses, ids, times and long numbers "
        "replaced by placeholders.",
    )
    count = serializers.IntegerField()
    first_seen = serializers.DateTimeField(help_text="When the group's first email failed.")
    last_seen = serializers.DateTimeField(help_text="When the group's last email failed.")


class FailedGroupsOutputSerializer(serializers.Serializer):
    """The biggest groups first (ties: the latest failure first)."""

    results = FailedGroupOutputSerializer(many=True)
    truncated = serializers.BooleanField(help_text="More groups exist than were listed.")


class FailedRetryOutputSerializer(serializers.Serializer):
    """What a bulk retry did."""

    retried = serializers.IntegerField(help_text="Failed emails queued again.")
    skipped = serializers.IntegerField(
        help_text="Matching failed emails left failed: every recipient is suppressed (a send "
        "would only mark them suppressed), or they stopped being failed before the update."
    )


class FailedCancelOutputSerializer(serializers.Serializer):
    """What a bulk cancel did."""

    cancelled = serializers.IntegerField(help_text="Retrying emails cancelled.")
    skipped = serializers.IntegerField(
        help_text="Matching retrying emails left as they were: they stopped being retrying "
        "(a worker claimed one for its next attempt) before the update."
    )


def _acting_client(api_key: ApiKey) -> Client | None:
    """The client whose emails the key acts on, or None for every client (`all_clients`)."""
    return None if api_key.all_clients else api_key.client


class FailedEmailsApi(ScopedApiView):
    """GET: failed emails grouped by error (scope `admin`)."""

    required_scopes = {"GET": "admin"}

    @extend_schema(
        parameters=[FailedGroupsFilterSerializer],
        responses={
            200: FailedGroupsOutputSerializer,
            400: field_errors_response("A query parameter is malformed; its name is the key."),
        },
    )
    def get(self, request: Request) -> Response:
        """Groups of the key's client's failed emails (every client's for `all_clients`)."""
        filters = FailedGroupsFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        params = dict(filters.validated_data)
        limit = params.pop("page_size", GROUPS_DEFAULT)
        emails = email_list(
            status=EmailStatus.FAILED, client=_acting_client(request.auth), **params
        )
        groups = dead_letter_groups(emails=emails, limit=limit + 1)
        answer = {"results": groups[:limit], "truncated": len(groups) > limit}
        return Response(FailedGroupsOutputSerializer(answer).data)


class FailedRetryApi(ScopedApiView):
    """POST: queue every matching failed email again (scope `admin`), in one statement."""

    required_scopes = {"POST": "admin"}

    @extend_schema(
        request=FailedEmailFilterSerializer, responses={200: FailedRetryOutputSerializer}
    )
    def post(self, request: Request) -> Response:
        """Retry the matching failed emails: they are sent again as soon as possible."""
        filters = FailedEmailFilterSerializer(data=request.data)
        filters.is_valid(raise_exception=True)
        result = emails_retry_matching(
            emails=email_list(
                status=EmailStatus.FAILED,
                client=_acting_client(request.auth),
                **filters.validated_data,
            ),
            skip_suppressed=True,
        )
        return Response(
            FailedRetryOutputSerializer({"retried": result.changed, "skipped": result.skipped}).data
        )


class FailedCancelApi(ScopedApiView):
    """POST: cancel every matching retrying email (scope `admin`), in one statement."""

    required_scopes = {"POST": "admin"}

    @extend_schema(
        request=FailedEmailFilterSerializer, responses={200: FailedCancelOutputSerializer}
    )
    def post(self, request: Request) -> Response:
        """Cancel the matching retrying emails: they get no further attempt."""
        filters = FailedEmailFilterSerializer(data=request.data)
        filters.is_valid(raise_exception=True)
        result = emails_cancel_matching(
            emails=email_list(
                status=EmailStatus.RETRYING,
                client=_acting_client(request.auth),
                **filters.validated_data,
            )
        )
        return Response(
            FailedCancelOutputSerializer(
                {"cancelled": result.changed, "skipped": result.skipped}
            ).data
        )
