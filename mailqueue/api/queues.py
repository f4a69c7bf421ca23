"""Queue control API (scope `admin`): the queues' state, pause and resume a priority.

Queues are shared by every client, so an `admin` key sees and steers all of them.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.api.views import ScopedApiView
from mailqueue.models import ApiKey, Priority
from mailqueue.selectors.queues import queue_pauses, queues_overview
from mailqueue.services.queues import queue_pause, queue_resume

QUEUE_NAME_PARAMETER = OpenApiParameter(
    "name",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    enum=Priority.values,
    description="The queue: a priority.",
)


class QueueOutputSerializer(serializers.Serializer):
    """One queue: its emails per state from PostgreSQL, its pause, its live workers."""

    name = serializers.CharField()
    queued = serializers.IntegerField()
    scheduled = serializers.IntegerField()
    retrying = serializers.IntegerField()
    sending = serializers.IntegerField()
    failed_24h = serializers.IntegerField(help_text="Emails that failed in the last 24 hours.")
    oldest_age_seconds = serializers.FloatField(
        allow_null=True,
        help_text="How long the email waiting longest (queued, or a due retry or scheduled "
        "send) has waited; null when none waits.",
    )
    paused = serializers.BooleanField()
    paused_at = serializers.DateTimeField(allow_null=True)
    paused_by = serializers.CharField()
    workers = serializers.IntegerField(
        allow_null=True, help_text="Live workers serving this queue; null when Redis is down."
    )


class QueueTotalsOutputSerializer(serializers.Serializer):
    """The queues added up; `workers` counts each live worker once."""

    queued = serializers.IntegerField()
    scheduled = serializers.IntegerField()
    retrying = serializers.IntegerField()
    sending = serializers.IntegerField()
    failed_24h = serializers.IntegerField()
    oldest_age_seconds = serializers.FloatField(allow_null=True)
    workers = serializers.IntegerField(allow_null=True)


class QueuesOutputSerializer(serializers.Serializer):
    """Every queue, highest priority first, plus totals."""

    queues = QueueOutputSerializer(many=True)
    totals = QueueTotalsOutputSerializer()


class QueuePauseOutputSerializer(serializers.Serializer):
    """A queue's pause after a pause or resume."""

    name = serializers.CharField()
    paused = serializers.BooleanField()
    paused_at = serializers.DateTimeField(allow_null=True)
    paused_by = serializers.CharField()


def _pause_state(name: str) -> dict:
    pause = queue_pauses().get(name)
    return {
        "name": name,
        "paused": pause is not None,
        "paused_at": pause.paused_at if pause else None,
        "paused_by": pause.paused_by if pause else "",
    }


def _actor(api_key: ApiKey) -> str:
    return f"api:{api_key.prefix} ({api_key.client.name})"


class QueuesApi(ScopedApiView):
    """GET: every queue's emails per state, pause and workers, plus totals (scope `admin`)."""

    required_scopes = {"GET": "admin"}

    @extend_schema(responses={200: QueuesOutputSerializer})
    def get(self, request: Request) -> Response:
        """The queues of every client (they are shared)."""
        return Response(QueuesOutputSerializer(queues_overview()).data)


class _QueueStateApi(ScopedApiView):
    """POST: change one queue's state (scope `admin`) and answer with it."""

    required_scopes = {"POST": "admin"}

    def change(self, request: Request, name: str) -> None:
        """Pause or resume the queue."""
        raise NotImplementedError

    @extend_schema(
        request=None,
        parameters=[QUEUE_NAME_PARAMETER],
        responses={200: QueuePauseOutputSerializer},
    )
    def post(self, request: Request, name: str) -> Response:
        """Change the queue's state; doing it twice changes nothing more."""
        self.change(request, name)
        return Response(QueuePauseOutputSerializer(_pause_state(name)).data)


class QueuePauseApi(_QueueStateApi):
    """POST: pause a queue (scope `admin`): it keeps accepting emails; workers send none."""

    def change(self, request: Request, name: str) -> None:
        """Pause it; pausing a paused queue changes nothing."""
        queue_pause(priority=name, paused_by=_actor(request.auth))


class QueueResumeApi(_QueueStateApi):
    """POST: resume a queue (scope `admin`): workers send what waited, oldest first."""

    def change(self, request: Request, name: str) -> None:
        """Resume it; resuming a running queue changes nothing but a drain request."""
        queue_resume(priority=name)
