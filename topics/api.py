"""Topic and subscriber API: the calling client's topics (scope `templates` to write, `read` to
read) and their subscribers (scope `send` to write, `read` to read)."""

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.api.fields import AddressField, JSONObjectField
from mailqueue.api.pagination import CreatedCursorPagination
from mailqueue.api.schema import field_errors_response
from mailqueue.api.serializers import StrictSerializer
from mailqueue.api.views import ScopedApiView, created_response
from topics.models import DEFAULT_SEND_TIME, Frequency, Subscriber, SubscriberStatus, Topic
from topics.selectors import subscriber_get, subscriber_list, topic_get, topic_list
from topics.services import (
    TOPIC_FIELDS,
    subscriber_subscribe,
    subscriber_unsubscribe,
    topic_create,
    topic_delete,
    topic_update,
)

TIME_FORMAT = "%H:%M"
SLUG_CONFLICT = {
    400: field_errors_response("A field is refused (a slug in use: `slug`); the body names it.")
}
BAD_QUERY = {400: field_errors_response("A query parameter is malformed; its name is the key.")}
BAD_ADDRESS = {400: field_errors_response("The `email` in the path is not an email address.")}
SUBSCRIBE_CONFLICT = {
    409: field_errors_response(
        "`email` unsubscribed (send `resubscribe: true`), or is under a hard-bounce or "
        "complaint suppression (`reason` names it)."
    )
}


class TopicInputSerializer(StrictSerializer):
    """Body of POST/PUT/PATCH of a topic: a `template` slug, or its own subject and bodies."""

    slug = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(
        allow_blank=True, required=False, default="", trim_whitespace=False
    )
    template = serializers.SlugField(max_length=100, allow_blank=True, required=False, default="")
    subject = serializers.CharField(max_length=998, allow_blank=True, required=False, default="")
    html = serializers.CharField(
        allow_blank=True, required=False, default="", trim_whitespace=False
    )
    text = serializers.CharField(
        allow_blank=True, required=False, default="", trim_whitespace=False
    )
    context = JSONObjectField(required=False, default=dict)
    double_opt_in = serializers.BooleanField(required=False, default=False)
    send_time = serializers.TimeField(
        required=False,
        default=DEFAULT_SEND_TIME,
        format=TIME_FORMAT,
        input_formats=[TIME_FORMAT, "%H:%M:%S"],
    )
    timezone = serializers.CharField(max_length=64, required=False, default="UTC")


@extend_schema_field(
    {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$", "example": "09:00"}
)
class SendTimeOutputField(serializers.TimeField):
    """A time of day as HH:MM (OpenAPI's `time` format would promise seconds and an offset)."""


class TopicOutputSerializer(serializers.ModelSerializer):
    """A topic."""

    send_time = SendTimeOutputField(format=TIME_FORMAT)

    class Meta:
        model = Topic
        fields = ["slug", *TOPIC_FIELDS, "created_at", "updated_at"]


class ListFilterSerializer(StrictSerializer):
    """Query parameters of a cursor-paginated list."""

    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)


class SubscriberListFilterSerializer(ListFilterSerializer):
    """Query parameters of GET /topics/{slug}/subscribers/."""

    status = serializers.ChoiceField(choices=SubscriberStatus.choices, required=False)


class SubscribeInputSerializer(StrictSerializer):
    """Body of POST /topics/{slug}/subscribers/."""

    email = AddressField()
    context = JSONObjectField(required=False)
    frequency = serializers.ChoiceField(choices=Frequency.choices, required=False, allow_blank=True)
    # Subscribe again an address that unsubscribed (only with the person's new consent).
    resubscribe = serializers.BooleanField(required=False, default=False)


class SubscriberOutputSerializer(serializers.ModelSerializer):
    """A subscriber of a topic."""

    topic = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Subscriber
        fields = [
            "email",
            "topic",
            "status",
            "context",
            "frequency",
            "confirmed_at",
            "unsubscribed_at",
            "unsubscribed_via",
            "created_at",
            "updated_at",
        ]


def _paginated(
    view: ScopedApiView,
    request: Request,
    queryset: QuerySet,
    output: type[serializers.ModelSerializer],
) -> Response:
    """One cursor page of a queryset (newest first), in the output serializer's shape."""
    paginator = view.pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(output(page, many=True).data)


class TopicsApi(ScopedApiView):
    """GET: the client's topics (scope `read` or `templates`). POST: add one (scope
    `templates`)."""

    required_scopes = {"GET": ("read", "templates"), "POST": "templates"}
    pagination_class = CreatedCursorPagination

    @extend_schema(
        parameters=[ListFilterSerializer],
        responses={200: TopicOutputSerializer(many=True), **BAD_QUERY},
        operation_id="topics_list",
    )
    def get(self, request: Request) -> Response:
        """Newest first, cursor-paginated."""
        ListFilterSerializer(data=request.query_params.dict()).is_valid(raise_exception=True)
        topics = topic_list(client=request.auth.client)
        return _paginated(self, request, topics, TopicOutputSerializer)

    @extend_schema(
        request=TopicInputSerializer,
        responses={201: TopicOutputSerializer, **SLUG_CONFLICT},
        operation_id="topics_create",
    )
    def post(self, request: Request) -> Response:
        """Add a topic; 400 naming the field for a used slug, bad content or time zone."""
        serializer = TopicInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        topic = topic_create(client=request.auth.client, **serializer.validated_data)
        return created_response(
            TopicOutputSerializer(topic).data, url_name="api:topic-detail", slug=topic.slug
        )


class TopicDetailApi(ScopedApiView):
    """GET (scope `read` or `templates`), PUT/PATCH/DELETE (scope `templates`) one topic."""

    required_scopes = {
        "GET": ("read", "templates"),
        "PUT": "templates",
        "PATCH": "templates",
        "DELETE": "templates",
    }

    @extend_schema(responses={200: TopicOutputSerializer})
    def get(self, request: Request, slug: str) -> Response:
        """One of the client's topics, or 404."""
        topic = topic_get(client=request.auth.client, slug=slug)
        return Response(TopicOutputSerializer(topic).data)

    @extend_schema(request=TopicInputSerializer, responses={200: TopicOutputSerializer})
    def put(self, request: Request, slug: str) -> Response:
        """Replace a topic (fields left out take their defaults)."""
        return self._update(request, slug, partial=False)

    @extend_schema(request=TopicInputSerializer, responses={200: TopicOutputSerializer})
    def patch(self, request: Request, slug: str) -> Response:
        """Change some fields of a topic."""
        return self._update(request, slug, partial=True)

    def _update(self, request: Request, slug: str, *, partial: bool) -> Response:
        topic = topic_get(client=request.auth.client, slug=slug)
        data = request.data
        if not partial and isinstance(data, dict):
            data = {"slug": slug, **data}
        serializer = TopicInputSerializer(data=data, partial=partial)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        if fields.pop("slug", slug) != slug:
            raise serializers.ValidationError({"slug": ["The slug of a topic cannot change."]})
        topic = topic_update(topic=topic, **fields)
        return Response(TopicOutputSerializer(topic).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str) -> Response:
        """Delete a topic and its subscribers (emails already made keep their content)."""
        topic_delete(topic=topic_get(client=request.auth.client, slug=slug))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SubscribersApi(ScopedApiView):
    """GET: a topic's subscribers (scope `read`). POST: subscribe an address (scope `send`)."""

    required_scopes = {"GET": "read", "POST": "send"}
    pagination_class = CreatedCursorPagination

    @extend_schema(
        parameters=[SubscriberListFilterSerializer],
        responses={200: SubscriberOutputSerializer(many=True), **BAD_QUERY},
        operation_id="topic_subscribers_list",
    )
    def get(self, request: Request, slug: str) -> Response:
        """Newest first, cursor-paginated, optionally of one `status`."""
        topic = topic_get(client=request.auth.client, slug=slug)
        filters = SubscriberListFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        subscribers = subscriber_list(topic=topic, status=filters.validated_data.get("status"))
        return _paginated(self, request, subscribers, SubscriberOutputSerializer)

    @extend_schema(
        request=SubscribeInputSerializer,
        responses={
            201: SubscriberOutputSerializer,
            200: SubscriberOutputSerializer,
            **SUBSCRIBE_CONFLICT,
        },
        operation_id="topic_subscribers_create",
    )
    def post(self, request: Request, slug: str) -> Response:
        """Subscribe an address: 201 when new (pending, with a confirmation email, under double
        opt-in), 200 when it already was (idempotent)."""
        topic = topic_get(client=request.auth.client, slug=slug)
        serializer = SubscribeInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        subscription = subscriber_subscribe(
            topic=topic, api_key=request.auth, **serializer.validated_data
        )
        return Response(
            SubscriberOutputSerializer(subscription.subscriber).data,
            status=status.HTTP_201_CREATED if subscription.created else status.HTTP_200_OK,
        )


class SubscriberDetailApi(ScopedApiView):
    """GET (scope `read`) or DELETE (unsubscribe, scope `send`) one subscriber of a topic."""

    required_scopes = {"GET": "read", "DELETE": "send"}

    @extend_schema(responses={200: SubscriberOutputSerializer, **BAD_ADDRESS})
    def get(self, request: Request, slug: str, email: str) -> Response:
        """One subscriber, whatever its status, or 404."""
        topic = topic_get(client=request.auth.client, slug=slug)
        return Response(SubscriberOutputSerializer(subscriber_get(topic=topic, email=email)).data)

    @extend_schema(responses={204: None, **BAD_ADDRESS})
    def delete(self, request: Request, slug: str, email: str) -> Response:
        """Unsubscribe (the row is kept, `unsubscribed` via `api`, and the topic's unsubscribe
        suppression added); 204 also when it already was."""
        topic = topic_get(client=request.auth.client, slug=slug)
        subscriber_unsubscribe(subscriber=subscriber_get(topic=topic, email=email))
        return Response(status=status.HTTP_204_NO_CONTENT)
