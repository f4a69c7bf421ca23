"""Suppression list API: list (scope `read`), add a manual entry and remove the client's own
entries for an address (scope `send`)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.api.fields import AddressField
from mailqueue.api.pagination import CreatedCursorPagination
from mailqueue.api.schema import error_response, field_errors_response
from mailqueue.api.serializers import StrictSerializer
from mailqueue.api.views import ScopedApiView
from mailqueue.models import Suppression, SuppressionReason
from mailqueue.selectors.suppressions import suppression_list
from mailqueue.services.suppressions import suppression_add_manual, suppressions_remove


class SuppressionOutputSerializer(serializers.ModelSerializer):
    """One entry; `service_wide` entries (hard bounces, complaints) apply to every client and
    only an operator can remove them."""

    service_wide = serializers.SerializerMethodField()

    class Meta:
        model = Suppression
        fields = ["address", "reason", "topic", "service_wide", "created_at"]

    def get_service_wide(self, entry: Suppression) -> bool:
        """Whether the entry belongs to no client (it stops every client's email)."""
        return entry.client_id is None


class SuppressionCreateInputSerializer(StrictSerializer):
    """Body of POST /api/v1/suppressions/."""

    address = AddressField()
    reason = serializers.ChoiceField(
        choices=[SuppressionReason.MANUAL.value], default=SuppressionReason.MANUAL.value
    )
    topic = serializers.SlugField(required=False, max_length=100, default="")


class SuppressionListFilterSerializer(StrictSerializer):
    """Query parameters of GET /api/v1/suppressions/."""

    reason = serializers.ChoiceField(choices=SuppressionReason.choices, required=False)
    address = serializers.CharField(required=False, max_length=320)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)


class SuppressionDeleteFilterSerializer(StrictSerializer):
    """Query parameters of DELETE /api/v1/suppressions/{address}/."""

    topic = serializers.CharField(required=False, max_length=100, allow_blank=True)


class SuppressionsApi(ScopedApiView):
    """GET: the client's entries and the service-wide ones (scope `read`). POST: add a manual
    entry (scope `send`)."""

    required_scopes = {"GET": "read", "POST": "send"}
    pagination_class = CreatedCursorPagination

    @extend_schema(
        parameters=[SuppressionListFilterSerializer],
        responses={
            200: SuppressionOutputSerializer(many=True),
            400: field_errors_response("A query parameter is malformed; its name is the key."),
        },
        operation_id="suppressions_list",
    )
    def get(self, request: Request) -> Response:
        """Newest first, cursor-paginated, filtered by reason and address."""
        filters = SuppressionListFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        params = {
            key: value
            for key, value in filters.validated_data.items()
            if key in ("reason", "address")
        }
        queryset = suppression_list(client=request.auth.client, **params)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(SuppressionOutputSerializer(page, many=True).data)

    @extend_schema(
        request=SuppressionCreateInputSerializer,
        responses={201: SuppressionOutputSerializer},
        operation_id="suppressions_create",
    )
    def post(self, request: Request) -> Response:
        """Stop sending to an address (every email, or one topic's); 201 with the entry."""
        serializer = SuppressionCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry = suppression_add_manual(
            client=request.auth.client,
            address=serializer.validated_data["address"],
            topic=serializer.validated_data["topic"],
        )
        return Response(SuppressionOutputSerializer(entry).data, status=status.HTTP_201_CREATED)


class SuppressionDetailApi(ScopedApiView):
    """DELETE: remove the client's own entries for an address (scope `send`)."""

    required_scopes = {"DELETE": "send"}

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "topic", str, OpenApiParameter.QUERY, description="Only this topic's entries."
            ),
        ],
        responses={
            204: None,
            400: field_errors_response("The address or `topic` is malformed."),
            404: error_response("The client has no entry for this address (and topic)."),
        },
        operation_id="suppressions_delete",
    )
    def delete(self, request: Request, address: str) -> Response:
        """Delete the entries; service-wide ones stay (only an operator removes them)."""
        filters = SuppressionDeleteFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        removed = suppressions_remove(
            client=request.auth.client, address=address, topic=filters.validated_data.get("topic")
        )
        if not removed:
            return Response(
                {"detail": "No suppression of yours for this address."},
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)
