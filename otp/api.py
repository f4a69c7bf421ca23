"""One-time code API: issue a code by email, verify one."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.api.fields import AddressField, JSONObjectField
from mailqueue.api.schema import field_errors_response
from mailqueue.api.serializers import StrictSerializer
from mailqueue.api.views import ScopedApiView
from otp.services import (
    DEFAULT_PURPOSE,
    LENGTH_RANGE,
    TTL_RANGE,
    VerifyReason,
    otp_issue,
    otp_verify,
)

PURPOSE_FIELD = {"max_length": 100, "required": False, "default": DEFAULT_PURPOSE}


class OtpIssueInputSerializer(StrictSerializer):
    """Body of POST /api/v1/otp/."""

    email = AddressField()
    length = serializers.IntegerField(
        required=False, default=6, min_value=LENGTH_RANGE[0], max_value=LENGTH_RANGE[1]
    )
    ttl_seconds = serializers.IntegerField(
        required=False, default=600, min_value=TTL_RANGE[0], max_value=TTL_RANGE[1]
    )
    purpose = serializers.SlugField(**PURPOSE_FIELD)
    template = serializers.SlugField(max_length=100, required=False)
    context = JSONObjectField(required=False)


class OtpIssueOutputSerializer(serializers.Serializer):
    """Answer to POST /api/v1/otp/: the code's id and when it expires (never the code)."""

    id = serializers.UUIDField()
    expires_at = serializers.DateTimeField()


class OtpVerifyInputSerializer(StrictSerializer):
    """Body of POST /api/v1/otp/verify/."""

    email = AddressField()
    code = serializers.CharField(max_length=32)
    purpose = serializers.SlugField(**PURPOSE_FIELD)


class OtpVerifyOutputSerializer(serializers.Serializer):
    """`{"verified": true}`, or `{"verified": false, "reason": ...}`."""

    verified = serializers.BooleanField()
    reason = serializers.ChoiceField(
        choices=[
            VerifyReason.INVALID,
            VerifyReason.EXPIRED,
            VerifyReason.TOO_MANY_ATTEMPTS,
            VerifyReason.NOT_FOUND,
        ],
        required=False,
    )

    def to_representation(self, instance) -> dict:
        """Leave `reason` out of a success."""
        data = super().to_representation(instance)
        if data["verified"]:
            data.pop("reason", None)
        return data


class OtpIssueApi(ScopedApiView):
    """POST: email a new one-time code to an address (scope `send`)."""

    required_scopes = {"POST": "send"}

    @extend_schema(
        request=OtpIssueInputSerializer,
        responses={
            202: OtpIssueOutputSerializer,
            400: field_errors_response("A field is missing or out of range; its name is the key."),
            429: field_errors_response("Too soon after the last code, or too many this hour."),
        },
        operation_id="otp_issue",
    )
    def post(self, request: Request) -> Response:
        """Issue the code and queue its email at `high` priority; 202 with its id."""
        serializer = OtpIssueInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key = request.auth
        code = otp_issue(client=api_key.client, api_key=api_key, **serializer.validated_data)
        return Response(OtpIssueOutputSerializer(code).data, status=status.HTTP_202_ACCEPTED)


class OtpVerifyApi(ScopedApiView):
    """POST: check a code an address received (scope `send`)."""

    required_scopes = {"POST": "send"}

    @extend_schema(
        request=OtpVerifyInputSerializer,
        responses={200: OtpVerifyOutputSerializer},
        operation_id="otp_verify",
    )
    def post(self, request: Request) -> Response:
        """200 with whether the code verified, and why not."""
        serializer = OtpVerifyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = otp_verify(client=request.auth.client, **serializer.validated_data)
        return Response(OtpVerifyOutputSerializer(result).data)
