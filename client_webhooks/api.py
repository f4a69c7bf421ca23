"""Webhook endpoint API: register, list, read, change and delete the client's endpoints."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from client_webhooks.addresses import MAX_URL_LENGTH
from client_webhooks.models import WebhookEndpoint
from client_webhooks.selectors import webhook_endpoint_get, webhook_endpoint_list
from client_webhooks.services import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_update,
)
from mailqueue.api.serializers import StrictSerializer
from mailqueue.api.views import ScopedApiView, created_response
from tracking.models import EventType

EVENT_CHOICES = ["*", *EventType.values]


class EventListField(serializers.ListField):
    """Event types to receive, or ["*"] for all; duplicates dropped."""

    child = serializers.ChoiceField(choices=EVENT_CHOICES)

    def __init__(self, **kwargs) -> None:
        super().__init__(min_length=1, max_length=len(EVENT_CHOICES), **kwargs)

    def to_internal_value(self, data) -> list[str]:
        """Validated types, each once, in the order given."""
        return list(dict.fromkeys(super().to_internal_value(data)))


class WebhookEndpointCreateInputSerializer(StrictSerializer):
    """Body of POST /webhooks/."""

    url = serializers.CharField(max_length=MAX_URL_LENGTH)
    events = EventListField()


class WebhookEndpointUpdateInputSerializer(StrictSerializer):
    """Body of PATCH /webhooks/{id}/: any of url, events, active."""

    url = serializers.CharField(max_length=MAX_URL_LENGTH, required=False)
    events = EventListField(required=False)
    active = serializers.BooleanField(required=False)

    def to_internal_value(self, data) -> dict:
        """Refuse non-boolean `active` (DRF would read "yes" or 1 as true)."""
        if isinstance(data, dict) and "active" in data and not isinstance(data["active"], bool):
            raise serializers.ValidationError({"active": ["Must be true or false."]})
        return super().to_internal_value(data)


class WebhookEndpointOutputSerializer(serializers.ModelSerializer):
    """An endpoint; `disabled_at` is set when repeated failures turned it off."""

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "events",
            "active",
            "consecutive_failures",
            "disabled_at",
            "created_at",
        ]


class WebhookEndpointCreatedOutputSerializer(WebhookEndpointOutputSerializer):
    """A new endpoint with its signing secret: the only answer that shows the secret."""

    class Meta(WebhookEndpointOutputSerializer.Meta):
        fields = [*WebhookEndpointOutputSerializer.Meta.fields, "secret"]


class WebhookEndpointsApi(ScopedApiView):
    """GET: the client's endpoints. POST: register one (scope `send` for both)."""

    required_scopes = {"GET": "send", "POST": "send"}

    @extend_schema(
        responses={200: WebhookEndpointOutputSerializer(many=True)},
        operation_id="webhooks_list",
    )
    def get(self, request: Request) -> Response:
        """Every endpoint of the calling client, oldest first."""
        endpoints = webhook_endpoint_list(client=request.auth.client)
        return Response(WebhookEndpointOutputSerializer(endpoints, many=True).data)

    @extend_schema(
        request=WebhookEndpointCreateInputSerializer,
        responses={201: WebhookEndpointCreatedOutputSerializer},
        operation_id="webhooks_create",
    )
    def post(self, request: Request) -> Response:
        """Register an endpoint; 201 with its signing secret, shown this once."""
        serializer = WebhookEndpointCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_create(client=request.auth.client, **serializer.validated_data)
        return created_response(
            WebhookEndpointCreatedOutputSerializer(endpoint).data,
            url_name="api:webhook-detail",
            endpoint_id=endpoint.pk,
        )


class WebhookEndpointDetailApi(ScopedApiView):
    """GET, PATCH, DELETE one of the client's endpoints (scope `send`)."""

    required_scopes = {"GET": "send", "PATCH": "send", "DELETE": "send"}

    @extend_schema(responses={200: WebhookEndpointOutputSerializer})
    def get(self, request: Request, endpoint_id: str) -> Response:
        """One endpoint (without its secret)."""
        endpoint = webhook_endpoint_get(client=request.auth.client, endpoint_id=endpoint_id)
        return Response(WebhookEndpointOutputSerializer(endpoint).data)

    @extend_schema(
        request=WebhookEndpointUpdateInputSerializer,
        responses={200: WebhookEndpointOutputSerializer},
    )
    def patch(self, request: Request, endpoint_id: str) -> Response:
        """Change the URL, the events, or turn the endpoint off or on again."""
        endpoint = webhook_endpoint_get(client=request.auth.client, endpoint_id=endpoint_id)
        serializer = WebhookEndpointUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_update(endpoint=endpoint, **serializer.validated_data)
        return Response(WebhookEndpointOutputSerializer(endpoint).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, endpoint_id: str) -> Response:
        """Delete the endpoint; nothing more is sent to it."""
        endpoint = webhook_endpoint_get(client=request.auth.client, endpoint_id=endpoint_id)
        webhook_endpoint_delete(endpoint=endpoint)
        return Response(status=status.HTTP_204_NO_CONTENT)
