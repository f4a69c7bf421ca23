"""Sender-domain API: the domains a client may send from (list: scope `read` or `send`;
register, verify by DNS, remove: scope `send`) and an operator's verification (scope `admin`)."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.api.schema import field_errors_response
from mailqueue.api.serializers import StrictSerializer
from mailqueue.api.views import ScopedApiView, created_response
from mailqueue.errors import ValidationFailed
from mailqueue.models import Client, SenderDomain
from mailqueue.selectors.sender_domains import sender_domain_get, sender_domain_list
from mailqueue.services.sender_domains import (
    domain_unicode,
    sender_domain_create,
    sender_domain_delete,
    sender_domain_register_verified,
    sender_domain_txt_record,
    sender_domain_verify_dns,
)

# What a failed DNS verification answers: the reason in words and as a code.
VERIFY_FAILED_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "reason": {
            "type": "string",
            "enum": ["nxdomain", "no_txt", "wrong_token", "timeout", "dns_error"],
        },
    },
    "required": ["detail", "reason"],
}


class TxtRecordOutputSerializer(serializers.Serializer):
    """The TXT record to publish: its name, type and value."""

    name = serializers.CharField()
    type = serializers.CharField()
    value = serializers.CharField()


class SenderDomainOutputSerializer(serializers.ModelSerializer):
    """A sender domain, whether it is verified, and the TXT record that verifies it."""

    client = serializers.CharField(source="client.name", read_only=True)
    unicode_domain = serializers.SerializerMethodField()
    verified = serializers.SerializerMethodField()
    txt_record = serializers.SerializerMethodField()

    class Meta:
        model = SenderDomain
        fields = [
            "id",
            "client",
            "domain",
            "unicode_domain",
            "verified",
            "verified_at",
            "verified_by",
            "verification_token",
            "txt_record",
            "created_at",
        ]

    def get_unicode_domain(self, obj: SenderDomain) -> str:
        """The domain with its punycode labels decoded (`bücher.de` for `xn--bcher-kva.de`)."""
        return domain_unicode(obj.domain)

    def get_verified(self, obj: SenderDomain) -> bool:
        """Whether the client may send from it."""
        return obj.verified_at is not None

    @extend_schema_field(TxtRecordOutputSerializer)
    def get_txt_record(self, obj: SenderDomain) -> dict:
        """The record to publish for POST .../verify/ to succeed."""
        record = sender_domain_txt_record(sender_domain=obj)
        return {"name": record.name, "type": "TXT", "value": record.value}


class SenderDomainCreateInputSerializer(StrictSerializer):
    """Body of POST /api/v1/sender-domains/."""

    domain = serializers.CharField(
        max_length=253, help_text="A hostname such as example.com (IDN allowed)."
    )


class SenderDomainOperatorVerifyInputSerializer(StrictSerializer):
    """Body of POST /api/v1/sender-domains/operator-verify/."""

    client = serializers.CharField(max_length=100, help_text="The client's name.")
    domain = serializers.CharField(max_length=253)


VERIFY_FAILED = {
    409: OpenApiResponse(
        response=VERIFY_FAILED_SCHEMA,
        description="The domain stays unverified: `reason` says why (no such name, no TXT "
        "record, another token, DNS timeout or error).",
    )
}


class SenderDomainsApi(ScopedApiView):
    """GET: the client's sender domains (scope `read` or `send`). POST: register one (scope
    `send`); 201 with the TXT record to publish."""

    required_scopes = {"GET": ("read", "send"), "POST": "send"}

    @extend_schema(
        responses={200: SenderDomainOutputSerializer(many=True)},
        operation_id="sender_domains_list",
    )
    def get(self, request: Request) -> Response:
        """Every domain of the calling client, verified or not."""
        domains = sender_domain_list(client=request.auth.client).select_related("client")
        return Response(SenderDomainOutputSerializer(domains, many=True).data)

    @extend_schema(
        request=SenderDomainCreateInputSerializer,
        responses={
            201: SenderDomainOutputSerializer,
            409: field_errors_response("The client already registered this domain."),
        },
        operation_id="sender_domains_create",
    )
    def post(self, request: Request) -> Response:
        """Register a domain, unverified; publish its TXT record, then POST .../verify/."""
        serializer = SenderDomainCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = sender_domain_create(
            client=request.auth.client, domain=serializer.validated_data["domain"]
        )
        return created_response(
            SenderDomainOutputSerializer(created).data,
            url_name="api:sender-domain-detail",
            domain_id=created.pk,
        )


class SenderDomainDetailApi(ScopedApiView):
    """GET: one sender domain (scope `read` or `send`). DELETE: remove it (scope `send`)."""

    required_scopes = {"GET": ("read", "send"), "DELETE": "send"}

    @extend_schema(responses={200: SenderDomainOutputSerializer})
    def get(self, request: Request, domain_id: int) -> Response:
        """One domain of the calling client."""
        found = sender_domain_get(client=request.auth.client, domain_id=domain_id)
        return Response(SenderDomainOutputSerializer(found).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, domain_id: int) -> Response:
        """Remove the domain: emails from it are refused from now on."""
        sender_domain_delete(
            sender_domain=sender_domain_get(client=request.auth.client, domain_id=domain_id)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class SenderDomainVerifyApi(ScopedApiView):
    """POST: look the domain's TXT record up now (scope `send`); 200 verified, 409 with the
    reason otherwise."""

    required_scopes = {"POST": "send"}

    @extend_schema(
        request=None,
        responses={200: SenderDomainOutputSerializer, **VERIFY_FAILED},
        operation_id="sender_domains_verify",
    )
    def post(self, request: Request, domain_id: int) -> Response:
        """Verify by DNS: `_mailqueue.<domain>` must carry `mailqueue-verification=<token>`."""
        found = sender_domain_get(client=request.auth.client, domain_id=domain_id)
        return Response(
            SenderDomainOutputSerializer(sender_domain_verify_dns(sender_domain=found)).data
        )


class SenderDomainOperatorVerifyApi(ScopedApiView):
    """POST: an operator marks a client's domain verified, registering it if needed (scope
    `admin`)."""

    required_scopes = {"POST": "admin"}

    @extend_schema(
        request=SenderDomainOperatorVerifyInputSerializer,
        responses={200: SenderDomainOutputSerializer},
        operation_id="sender_domains_operator_verify",
    )
    def post(self, request: Request) -> Response:
        """Any client's domain: the operator vouches for it instead of DNS."""
        serializer = SenderDomainOperatorVerifyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        client = Client.objects.filter(name=serializer.validated_data["client"]).first()
        if client is None:
            raise ValidationFailed("No client has this name.", field="client")
        verified = sender_domain_register_verified(
            client=client, domain=serializer.validated_data["domain"]
        )
        return Response(SenderDomainOutputSerializer(verified).data)
