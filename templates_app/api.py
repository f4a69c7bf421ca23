"""Template API: list, create, read, update, delete and render stored templates."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.api.fields import AddressField, JSONObjectField
from mailqueue.api.serializers import EmailAcceptedOutputSerializer, StrictSerializer
from mailqueue.api.views import ScopedApiView, created_response
from mailqueue.services import template_send_test
from templates_app.models import EmailTemplate, EmailTemplateVersion
from templates_app.selectors import template_get, template_list
from templates_app.services import (
    TEMPLATE_FIELDS,
    template_create,
    template_delete,
    template_render,
    template_update,
)


class TemplateVariablesField(serializers.ListField):
    """Required variable names: identifiers, no duplicates."""

    child = serializers.RegexField(r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)

    def to_internal_value(self, data):
        """Deduplicate while keeping order."""
        return list(dict.fromkeys(super().to_internal_value(data)))


class TemplateInputSerializer(StrictSerializer):
    """Body of POST/PUT/PATCH of a template."""

    slug = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    subject = serializers.CharField(max_length=998)
    html = serializers.CharField(
        allow_blank=True, required=False, default="", trim_whitespace=False
    )
    text = serializers.CharField(
        allow_blank=True, required=False, default="", trim_whitespace=False
    )
    variables = TemplateVariablesField(required=False, default=list)
    sample_context = JSONObjectField(required=False, default=dict)
    is_active = serializers.BooleanField(required=False, default=True)
    # Open/click tracking of emails from this template; null: MAILQUEUE_TRACK_* decide.
    track_opens = serializers.BooleanField(required=False, allow_null=True, default=None)
    track_clicks = serializers.BooleanField(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict) -> dict:
        """A template needs at least one body (only checked when both are known)."""
        if not self.partial and not (attrs.get("html") or attrs.get("text")):
            raise serializers.ValidationError({"html": ["Give 'html' and/or 'text'."]})
        return attrs


class TemplateVersionOutputSerializer(serializers.ModelSerializer):
    """One saved version of a template: who made it and when."""

    class Meta:
        model = EmailTemplateVersion
        fields = ["number", "created_at", "created_by"]


class TemplateOutputSerializer(serializers.ModelSerializer):
    """A stored template with its current version number and its version history."""

    versions = TemplateVersionOutputSerializer(many=True, read_only=True)

    class Meta:
        model = EmailTemplate
        fields = [
            "slug",
            *TEMPLATE_FIELDS,
            "version",
            "versions",
            "created_at",
            "updated_at",
        ]


class TemplateRenderInputSerializer(StrictSerializer):
    """Body of POST /templates/{slug}/render/."""

    context = JSONObjectField(required=False, default=dict)


class TemplateRenderOutputSerializer(serializers.Serializer):
    """A template rendered with a context: subject, HTML and text."""

    subject = serializers.CharField()
    html = serializers.CharField()
    text = serializers.CharField()


class TemplatesApi(ScopedApiView):
    """GET: list templates (scope `read` or `templates`). POST: create (scope `templates`)."""

    required_scopes = {"GET": ("read", "templates"), "POST": "templates"}

    @extend_schema(
        responses={200: TemplateOutputSerializer(many=True)}, operation_id="templates_list"
    )
    def get(self, request: Request) -> Response:
        """Every template, by slug, with its versions."""
        return Response(TemplateOutputSerializer(template_list(), many=True).data)

    @extend_schema(
        request=TemplateInputSerializer,
        responses={201: TemplateOutputSerializer},
        operation_id="templates_create",
    )
    def post(self, request: Request) -> Response:
        """Create a template; 400 naming the part and line if it does not compile."""
        serializer = TemplateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        template = template_create(
            created_by=f"API key {request.auth}", **serializer.validated_data
        )
        template = template_get(slug=template.slug)  # with its versions
        return created_response(
            TemplateOutputSerializer(template).data,
            url_name="api:template-detail",
            slug=template.slug,
        )


class TemplateDetailApi(ScopedApiView):
    """GET (scope `read` or `templates`), PUT/PATCH/DELETE (scope `templates`) one template."""

    required_scopes = {
        "GET": ("read", "templates"),
        "PUT": "templates",
        "PATCH": "templates",
        "DELETE": "templates",
    }

    @extend_schema(responses={200: TemplateOutputSerializer})
    def get(self, request: Request, slug: str) -> Response:
        """One template with its versions, or 404."""
        return Response(TemplateOutputSerializer(template_get(slug=slug)).data)

    @extend_schema(request=TemplateInputSerializer, responses={200: TemplateOutputSerializer})
    def put(self, request: Request, slug: str) -> Response:
        """Replace a template."""
        return self._update(request, slug, partial=False)

    @extend_schema(request=TemplateInputSerializer, responses={200: TemplateOutputSerializer})
    def patch(self, request: Request, slug: str) -> Response:
        """Change some fields of a template."""
        return self._update(request, slug, partial=True)

    def _update(self, request: Request, slug: str, *, partial: bool) -> Response:
        template = template_get(slug=slug)
        data = request.data
        if not partial and isinstance(data, dict):
            data = {"slug": slug, **data}
        serializer = TemplateInputSerializer(data=data, partial=partial)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        if fields.pop("slug", slug) != slug:
            raise serializers.ValidationError({"slug": ["The slug of a template cannot change."]})
        template = template_update(
            template=template, created_by=f"API key {request.auth}", **fields
        )
        return Response(TemplateOutputSerializer(template).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str) -> Response:
        """Delete a template (or deactivate it if emails already used it)."""
        template_delete(template=template_get(slug=slug))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TemplateRenderApi(ScopedApiView):
    """POST: render a template with a context; nothing is sent (scope `read` or `templates`)."""

    required_scopes = {"POST": ("read", "templates")}

    @extend_schema(
        request=TemplateRenderInputSerializer, responses={200: TemplateRenderOutputSerializer}
    )
    def post(self, request: Request, slug: str) -> Response:
        """Rendered subject, html and text."""
        serializer = TemplateRenderInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rendered = template_render(
            template=template_get(slug=slug), context=serializer.validated_data["context"]
        )
        return Response(TemplateRenderOutputSerializer(rendered).data)


class TemplateTestSendInputSerializer(StrictSerializer):
    """Body of POST /api/v1/templates/{slug}/test/."""

    to = AddressField()


class TemplateTestSendApi(ScopedApiView):
    """POST: send the template with its sample context to one address, at high priority, like
    the admin's "send test email" (scope `templates` or `admin`)."""

    required_scopes = {"POST": ("templates", "admin")}

    @extend_schema(
        request=TemplateTestSendInputSerializer,
        responses={202: EmailAcceptedOutputSerializer},
        operation_id="templates_test_send",
    )
    def post(self, request: Request, slug: str) -> Response:
        """Queue the test email; 202 with its id and a Location (it belongs to the key's client)."""
        serializer = TemplateTestSendInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        email = template_send_test(
            template=template_get(slug=slug),
            to=serializer.validated_data["to"],
            api_key=request.auth,
        )
        location = reverse("api:email-detail", kwargs={"email_id": email.pk})
        return Response(
            EmailAcceptedOutputSerializer(email).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": location},
        )
