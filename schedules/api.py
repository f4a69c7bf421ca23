"""Schedule API: the calling client's recurring sends (scope `send`; `read` may also read)."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.api.fields import AddressField, JSONObjectField
from mailqueue.api.pagination import CreatedCursorPagination
from mailqueue.api.schema import field_errors_response
from mailqueue.api.serializers import StrictSerializer
from mailqueue.api.views import ScopedApiView
from mailqueue.authentication import test_key_refuse
from mailqueue.models import Priority
from schedules.models import MissedPolicy, Schedule, ScheduleRun
from schedules.selectors import (
    schedule_get,
    schedule_last_run,
    schedule_list,
    schedule_next_runs,
)
from schedules.services import (
    SCHEDULE_FIELDS,
    schedule_create,
    schedule_delete,
    schedule_pause,
    schedule_resume,
    schedule_run_now,
    schedule_update,
)
from topics.api import BAD_QUERY, ListFilterSerializer

BAD_SCHEDULE = {
    400: field_errors_response(
        "A field is refused (bad `cron` or `timezone`, both or neither of `topic` and "
        "`recipients`, content); the body names it."
    )
}
READ_OR_SEND = ("send", "read")


class ScheduleInputSerializer(StrictSerializer):
    """Body of POST/PATCH of a schedule: an audience (`topic` or `recipients`), optional
    content of its own (else the topic's), and when (`cron` in `timezone`)."""

    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    topic = serializers.SlugField(max_length=100, required=False, allow_null=True, default=None)
    recipients = serializers.ListField(child=AddressField(), required=False, default=list)
    template = serializers.SlugField(max_length=100, allow_blank=True, required=False, default="")
    subject = serializers.CharField(max_length=998, allow_blank=True, required=False, default="")
    html = serializers.CharField(
        allow_blank=True, required=False, default="", trim_whitespace=False
    )
    text = serializers.CharField(
        allow_blank=True, required=False, default="", trim_whitespace=False
    )
    context = JSONObjectField(required=False, default=dict)
    cron = serializers.CharField(max_length=200)
    timezone = serializers.CharField(max_length=64, required=False, default="UTC")
    active = serializers.BooleanField(required=False, default=True)
    priority = serializers.ChoiceField(
        choices=Priority.choices, required=False, default=Priority.LOW
    )
    missed = serializers.ChoiceField(
        choices=MissedPolicy.choices, required=False, default=MissedPolicy.RUN_ONCE
    )

    def validate(self, attrs: dict) -> dict:
        """A new schedule names exactly one audience (both fields named when it does not)."""
        if not self.partial and bool(attrs.get("topic")) == bool(attrs.get("recipients")):
            message = "Give either 'topic' (its active subscribers) or 'recipients', not both."
            if not attrs.get("topic"):
                message = "Give either 'topic' (its active subscribers) or 'recipients'."
            raise serializers.ValidationError({"topic": [message], "recipients": [message]})
        return attrs


class RunOutputSerializer(serializers.ModelSerializer):
    """One run of a schedule: its batch (the same id), the tick it ran for, its emails."""

    id = serializers.UUIDField(source="batch_id")
    batch = serializers.UUIDField(source="batch_id")
    run_at = serializers.DateTimeField(source="tick")
    count = serializers.IntegerField(source="batch.count")
    expanded = serializers.SerializerMethodField()

    class Meta:
        model = ScheduleRun
        fields = ["id", "batch", "run_at", "manual", "count", "expanded", "created_at"]

    def get_expanded(self, run: ScheduleRun) -> bool:
        """Whether every email of the run is made (a large topic is expanded in chunks)."""
        return run.expanded_at is not None


class ScheduleOutputSerializer(serializers.ModelSerializer):
    """A schedule."""

    topic = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Schedule
        fields = [
            "id",
            *SCHEDULE_FIELDS,
            "next_run_at",
            "created_at",
            "updated_at",
        ]


class NextRunSerializer(serializers.Serializer):
    """One coming tick, in the schedule's time zone and in UTC."""

    local = serializers.DateTimeField(default_timezone=None)
    utc = serializers.DateTimeField()


class ScheduleDetailOutputSerializer(ScheduleOutputSerializer):
    """A schedule with its next five ticks and its latest run."""

    next_runs = serializers.SerializerMethodField()
    last_run = serializers.SerializerMethodField()

    class Meta(ScheduleOutputSerializer.Meta):
        fields = [*ScheduleOutputSerializer.Meta.fields, "next_runs", "last_run"]

    @extend_schema(responses=NextRunSerializer(many=True))
    def get_next_runs(self, schedule: Schedule) -> list[dict]:
        """The next five ticks (`local` with the zone's offset, `utc` ending in Z)."""
        return [
            {"local": tick["local"].isoformat(), "utc": tick["utc"].strftime("%Y-%m-%dT%H:%M:%SZ")}
            for tick in schedule_next_runs(schedule=schedule)
        ]

    @extend_schema(responses=RunOutputSerializer(allow_null=True))
    def get_last_run(self, schedule: Schedule) -> dict | None:
        """The latest run, or null before the first."""
        run = schedule_last_run(schedule=schedule)
        return RunOutputSerializer(run).data if run is not None else None


def _detail(schedule: Schedule, code: int = status.HTTP_200_OK) -> Response:
    return Response(ScheduleDetailOutputSerializer(schedule).data, status=code)


class SchedulesApi(ScopedApiView):
    """GET: the client's schedules. POST: add one (scope `send`)."""

    required_scopes = {"GET": READ_OR_SEND, "POST": "send"}
    pagination_class = CreatedCursorPagination

    @extend_schema(
        parameters=[ListFilterSerializer],
        responses={200: ScheduleOutputSerializer(many=True), **BAD_QUERY},
        operation_id="schedules_list",
    )
    def get(self, request: Request) -> Response:
        """Newest first, cursor-paginated."""
        ListFilterSerializer(data=request.query_params.dict()).is_valid(raise_exception=True)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            schedule_list(client=request.auth.client), request, view=self
        )
        return paginator.get_paginated_response(ScheduleOutputSerializer(page, many=True).data)

    @extend_schema(
        request=ScheduleInputSerializer,
        responses={201: ScheduleDetailOutputSerializer, **BAD_SCHEDULE},
        operation_id="schedules_create",
    )
    def post(self, request: Request) -> Response:
        """Add a schedule; 400 naming the field for a bad cron, time zone, audience or content."""
        test_key_refuse(request.auth, what="create schedules")
        serializer = ScheduleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        schedule = schedule_create(client=request.auth.client, **serializer.validated_data)
        response = _detail(schedule, status.HTTP_201_CREATED)
        response["Location"] = reverse("api:schedule-detail", kwargs={"schedule_id": schedule.pk})
        return response


class ScheduleDetailApi(ScopedApiView):
    """GET, PATCH, DELETE one of the client's schedules (another client's is 404)."""

    required_scopes = {"GET": READ_OR_SEND, "PATCH": "send", "DELETE": "send"}

    @extend_schema(responses={200: ScheduleDetailOutputSerializer})
    def get(self, request: Request, schedule_id: str) -> Response:
        """The schedule with `next_runs` and `last_run`."""
        return _detail(schedule_get(client=request.auth.client, schedule_id=schedule_id))

    @extend_schema(
        request=ScheduleInputSerializer,
        responses={200: ScheduleDetailOutputSerializer, **BAD_SCHEDULE},
    )
    def patch(self, request: Request, schedule_id: str) -> Response:
        """Change some fields; the next run is recomputed from now."""
        schedule = schedule_get(client=request.auth.client, schedule_id=schedule_id)
        serializer = ScheduleInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return _detail(schedule_update(schedule=schedule, **serializer.validated_data))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, schedule_id: str) -> Response:
        """Delete the schedule (the batches of its runs stay)."""
        schedule_delete(schedule=schedule_get(client=request.auth.client, schedule_id=schedule_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SchedulePauseApi(ScopedApiView):
    """POST: stop a schedule's runs until it is resumed (scope `send`)."""

    required_scopes = {"POST": "send"}

    @extend_schema(request=None, responses={200: ScheduleDetailOutputSerializer})
    def post(self, request: Request, schedule_id: str) -> Response:
        """Pause (a paused schedule stays paused)."""
        schedule = schedule_get(client=request.auth.client, schedule_id=schedule_id)
        return _detail(schedule_pause(schedule=schedule))


class ScheduleResumeApi(ScopedApiView):
    """POST: run a paused schedule again from its next tick (scope `send`)."""

    required_scopes = {"POST": "send"}

    @extend_schema(request=None, responses={200: ScheduleDetailOutputSerializer})
    def post(self, request: Request, schedule_id: str) -> Response:
        """Resume (ticks missed while paused do not run)."""
        schedule = schedule_get(client=request.auth.client, schedule_id=schedule_id)
        return _detail(schedule_resume(schedule=schedule))


class ScheduleRunApi(ScopedApiView):
    """POST: run a schedule once now (scope `send`)."""

    required_scopes = {"POST": "send"}

    @extend_schema(request=None, responses={202: RunOutputSerializer, **BAD_SCHEDULE})
    def post(self, request: Request, schedule_id: str) -> Response:
        """One run now, whatever the cron; 202 with the run's id (its batch's id) and a
        Location of the batch."""
        test_key_refuse(request.auth, what="run schedules")
        schedule = schedule_get(client=request.auth.client, schedule_id=schedule_id)
        run = schedule_run_now(schedule=schedule)
        response = Response(RunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = reverse("api:batch-detail", kwargs={"batch_id": run.batch_id})
        return response
