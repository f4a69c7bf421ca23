"""Email and batch API views: validate with an input serializer, call a service, answer."""

from django.db import transaction
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailqueue.api.idempotency import IDEMPOTENCY_HEADER, idempotent_create
from mailqueue.api.pagination import CreatedCursorPagination
from mailqueue.api.schema import ApiAutoSchema, error_response, field_errors_response
from mailqueue.api.serializers import (
    BatchCreateInputSerializer,
    BatchOutputSerializer,
    EmailAcceptedOutputSerializer,
    EmailCreateInputSerializer,
    EmailDetailOutputSerializer,
    EmailListFilterSerializer,
    EmailListOutputSerializer,
)
from mailqueue.authentication import HasScope
from mailqueue.selectors.batches import batch_get
from mailqueue.selectors.emails import email_get, email_list
from mailqueue.services import (
    BatchRecipient,
    batch_create,
    email_cancel,
    email_create,
    email_retry,
)

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    OpenApiParameter.HEADER,
    description="Repeats within 24 h with the same body return the first response.",
)
# What a create with an Idempotency-Key can answer besides its success.
IDEMPOTENCY_ERRORS = {
    409: field_errors_response("A request with this Idempotency-Key is still being processed."),
    422: field_errors_response("This Idempotency-Key was already used with a different body."),
}


class ScopedApiView(APIView):
    """Base view: every method needs an API key with the scope named in `required_scopes`.

    A method missing from `required_scopes` is not offered at all (405, see HasScope), so a
    handler added without naming its scope fails closed instead of opening to every key.
    """

    permission_classes = [HasScope]
    schema = ApiAutoSchema()
    # Method -> scope, or a tuple of scopes any one of which is enough.
    required_scopes: dict[str, str | tuple[str, ...]] = {}

    def scopes_for(self, method: str) -> tuple[str, ...] | None:
        """Scopes that allow this method, or None when the view does not offer it."""
        # HEAD is a GET without the body: it needs the same scope (its Content-Length tells).
        scopes = self.required_scopes.get("GET" if method == "HEAD" else method)
        return (scopes,) if isinstance(scopes, str) else scopes

    @property
    def allowed_methods(self) -> list[str]:
        """The methods offered (those with a scope), for the Allow header of a 405."""
        methods = [method for method in self.required_scopes if hasattr(self, method.lower())]
        return [*methods, "HEAD"] if "GET" in methods else methods


def created_response(data: dict, *, url_name: str, **url_kwargs: object) -> Response:
    """A 201 with the new resource's body and its URL in `Location`."""
    response = Response(data, status=status.HTTP_201_CREATED)
    response["Location"] = reverse(url_name, kwargs=url_kwargs)
    return response


class EmailsApi(ScopedApiView):
    """POST: accept an email (scope `send`). GET: list the client's emails (scope `read`)."""

    required_scopes = {"POST": "send", "GET": "read"}
    pagination_class = CreatedCursorPagination

    @extend_schema(
        request=EmailCreateInputSerializer,
        responses={202: EmailAcceptedOutputSerializer, **IDEMPOTENCY_ERRORS},
        parameters=[IDEMPOTENCY_PARAMETER],
        operation_id="emails_create",
    )
    def post(self, request: Request) -> Response:
        """Store the email and queue (or schedule) it; 202 with its id and a Location."""
        serializer = EmailCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key = request.auth

        def create() -> tuple[int, dict, str]:
            email = email_create(
                client=api_key.client, api_key=api_key, **serializer.validated_data
            )
            location = reverse("api:email-detail", kwargs={"email_id": email.pk})
            return (
                status.HTTP_202_ACCEPTED,
                dict(EmailAcceptedOutputSerializer(email).data),
                location,
            )

        return idempotent_create(request, create)

    @extend_schema(
        parameters=[EmailListFilterSerializer],
        responses={
            200: EmailListOutputSerializer(many=True),
            400: field_errors_response("A query parameter is malformed; its name is the key."),
        },
        operation_id="emails_list",
    )
    def get(self, request: Request) -> Response:
        """Newest first, cursor-paginated, filtered by status, batch, to, tag, creation time and
        event type."""
        filters = EmailListFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        params = {
            key: value
            for key, value in filters.validated_data.items()
            if key not in ("cursor", "page_size")
        }
        queryset = email_list(client=request.auth.client, **params)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(EmailListOutputSerializer(page, many=True).data)


class EmailDetailApi(ScopedApiView):
    """GET: everything about one email, with its events and attempts (scope `read`)."""

    required_scopes = {"GET": "read"}

    @extend_schema(responses={200: EmailDetailOutputSerializer})
    def get(self, request: Request, email_id: str) -> Response:
        """One email of the calling client."""
        email = email_get(client=request.auth.client, email_id=email_id, with_history=True)
        return Response(EmailDetailOutputSerializer(email).data)


class EmailRetryApi(ScopedApiView):
    """POST: queue a failed or cancelled email again (scope `send`); 409 otherwise."""

    required_scopes = {"POST": "send"}

    @extend_schema(
        request=None,
        responses={
            202: EmailDetailOutputSerializer,
            409: error_response("Only a failed or cancelled email can be retried."),
        },
    )
    def post(self, request: Request, email_id: str) -> Response:
        """Queue the email again, to be sent as soon as possible."""
        email = email_retry(email=email_get(client=request.auth.client, email_id=email_id))
        email = email_get(client=request.auth.client, email_id=email.pk, with_history=True)
        return Response(EmailDetailOutputSerializer(email).data, status=status.HTTP_202_ACCEPTED)


class EmailCancelApi(ScopedApiView):
    """POST: cancel a scheduled, queued or retrying email (scope `send`); 409 once sending."""

    required_scopes = {"POST": "send"}

    @extend_schema(
        request=None,
        responses={
            200: EmailDetailOutputSerializer,
            409: error_response("Only a scheduled, queued or retrying email can be cancelled."),
        },
    )
    def post(self, request: Request, email_id: str) -> Response:
        """Cancel the email; it will not be sent."""
        email = email_cancel(email=email_get(client=request.auth.client, email_id=email_id))
        email = email_get(client=request.auth.client, email_id=email.pk, with_history=True)
        return Response(EmailDetailOutputSerializer(email).data)


class BatchesApi(ScopedApiView):
    """POST: one template to many recipients (scope `send`)."""

    required_scopes = {"POST": "send"}

    @extend_schema(
        request=BatchCreateInputSerializer,
        responses={202: BatchOutputSerializer, **IDEMPOTENCY_ERRORS},
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    def post(self, request: Request) -> Response:
        """Store the batch and its emails, then enqueue them in chunks."""
        serializer = BatchCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        recipients = [BatchRecipient(**item) for item in data.pop("recipients")]
        api_key = request.auth

        def create() -> tuple[int, dict, str]:
            # The answer's counts are read in the batch's own transaction: a database lost
            # between the two cannot leave a stored batch behind a 503 saying nothing was.
            with transaction.atomic():
                batch = batch_create(
                    client=api_key.client, api_key=api_key, recipients=recipients, **data
                )
                body = dict(BatchOutputSerializer(batch).data)
            location = reverse("api:batch-detail", kwargs={"batch_id": batch.pk})
            return status.HTTP_202_ACCEPTED, body, location

        return idempotent_create(request, create)


class BatchDetailApi(ScopedApiView):
    """GET: a batch with counts per status (scope `read`)."""

    required_scopes = {"GET": "read"}

    @extend_schema(responses={200: BatchOutputSerializer})
    def get(self, request: Request, batch_id: str) -> Response:
        """One batch of the calling client."""
        return Response(
            BatchOutputSerializer(batch_get(client=request.auth.client, batch_id=batch_id)).data
        )
