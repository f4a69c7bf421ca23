"""Event rule API: list, create, read, change and delete the calling client's rules."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from event_sends.models import EventRule
from event_sends.selectors import event_rule_get, event_rule_list
from event_sends.services import event_rule_create, event_rule_delete, event_rule_update
from mailqueue.api.fields import SingleLineCharField
from mailqueue.api.schema import field_errors_response
from mailqueue.api.serializers import StrictSerializer
from mailqueue.api.views import ScopedApiView, created_response
from mailqueue.authentication import test_key_refuse
from mailqueue.models import Priority

RULE_ERRORS = {400: field_errors_response("A field is missing or invalid; the body names it.")}


class EventRuleInputSerializer(StrictSerializer):
    """Body of POST /event-rules/ (the paths and the template are checked by the service)."""

    event_type = serializers.CharField(max_length=100)
    template = serializers.SlugField(max_length=100)
    recipient_path = serializers.CharField(max_length=200)
    context_path = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.DEFAULT)
    tags = serializers.ListField(
        child=SingleLineCharField(max_length=100), max_length=50, required=False, default=list
    )
    # Checked by the service: each must be a context key name.
    secret_keys = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list
    )


class EventRuleUpdateInputSerializer(EventRuleInputSerializer):
    """Body of PATCH /event-rules/{id}/: any of the rule's fields."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, partial=True, **kwargs)


class EventRuleOutputSerializer(serializers.ModelSerializer):
    """A rule."""

    class Meta:
        model = EventRule
        fields = [
            "id",
            "event_type",
            "template",
            "recipient_path",
            "context_path",
            "priority",
            "tags",
            "secret_keys",
            "created_at",
            "updated_at",
        ]


class EventRulesApi(ScopedApiView):
    """GET: the client's rules. POST: add one (scope `templates` for both)."""

    required_scopes = {"GET": "templates", "POST": "templates"}

    @extend_schema(
        responses={200: EventRuleOutputSerializer(many=True)}, operation_id="event_rules_list"
    )
    def get(self, request: Request) -> Response:
        """Every rule of the calling client, by event type."""
        rules = event_rule_list(client=request.auth.client)
        return Response(EventRuleOutputSerializer(rules, many=True).data)

    @extend_schema(
        request=EventRuleInputSerializer,
        responses={201: EventRuleOutputSerializer, **RULE_ERRORS},
        operation_id="event_rules_create",
    )
    def post(self, request: Request) -> Response:
        """Add a rule: the client's events of `event_type` send `template`; 201."""
        test_key_refuse(request.auth, what="create event rules")
        serializer = EventRuleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rule = event_rule_create(client=request.auth.client, **serializer.validated_data)
        return created_response(
            EventRuleOutputSerializer(rule).data, url_name="api:event-rule-detail", rule_id=rule.pk
        )


class EventRuleDetailApi(ScopedApiView):
    """GET, PATCH, DELETE one of the client's rules (scope `templates`)."""

    required_scopes = {"GET": "templates", "PATCH": "templates", "DELETE": "templates"}

    @extend_schema(responses={200: EventRuleOutputSerializer})
    def get(self, request: Request, rule_id: int) -> Response:
        """One rule."""
        rule = event_rule_get(client=request.auth.client, rule_id=rule_id)
        return Response(EventRuleOutputSerializer(rule).data)

    @extend_schema(
        request=EventRuleUpdateInputSerializer,
        responses={200: EventRuleOutputSerializer, **RULE_ERRORS},
    )
    def patch(self, request: Request, rule_id: int) -> Response:
        """Change some of the rule's fields."""
        rule = event_rule_get(client=request.auth.client, rule_id=rule_id)
        serializer = EventRuleUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rule = event_rule_update(rule=rule, **serializer.validated_data)
        return Response(EventRuleOutputSerializer(rule).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, rule_id: int) -> Response:
        """Delete the rule: its event type sends nothing more (unless another rule says so)."""
        rule = event_rule_get(client=request.auth.client, rule_id=rule_id)
        event_rule_delete(rule=rule)
        return Response(status=status.HTTP_204_NO_CONTENT)
