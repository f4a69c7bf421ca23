"""Admin for stored templates: edit through the services, refuse sources that do not compile."""

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from mailqueue.admin.utils import copy_saved_instance, error_block, rendered_parts
from mailqueue.errors import TemplateRenderError, ValidationFailed
from templates_app.models import EmailTemplate
from templates_app.rendering import render_content
from templates_app.services import (
    TEMPLATE_FIELDS,
    template_check_context,
    template_create,
    template_delete,
    template_update,
    template_validate_sources,
)

SOURCE_WIDGET_ATTRS = {"rows": 18, "cols": 100, "style": "font-family: monospace; width: 90%;"}
JSON_WIDGET_ATTRS = {"rows": 8, "cols": 80, "style": "font-family: monospace;"}


class IndentedJSONField(forms.JSONField):
    """A JSON textarea that shows its value indented, so a sample context is easy to edit."""

    def prepare_value(self, value: Any) -> Any:
        """The value as indented JSON (text the user typed is shown back unchanged)."""
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


class EmailTemplateForm(forms.ModelForm):
    """Every field of a template; the sources must compile before the form is valid."""

    variables = IndentedJSONField(
        required=False,
        initial=list,
        widget=forms.Textarea(attrs=JSON_WIDGET_ATTRS),
        help_text='Names every send must provide in its context: a JSON list, e.g. ["name"].',
    )
    sample_context = IndentedJSONField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs=JSON_WIDGET_ATTRS),
        help_text='Example context for the preview: a JSON object, e.g. {"name": "Ada"}.',
    )

    class Meta:
        model = EmailTemplate
        fields = (
            "slug",
            "name",
            "is_active",
            "subject",
            "html",
            "text",
            "variables",
            "sample_context",
        )
        widgets = {
            "subject": forms.TextInput(attrs={"size": 100, "style": "font-family: monospace;"}),
            "html": forms.Textarea(attrs=SOURCE_WIDGET_ATTRS),
            "text": forms.Textarea(attrs=SOURCE_WIDGET_ATTRS),
        }

    def clean_variables(self) -> list[str]:
        """A JSON list of variable names."""
        value = self.cleaned_data.get("variables")
        if value in (None, ""):
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise forms.ValidationError('Give a JSON list of names, e.g. ["name", "login_url"].')
        return value

    def clean_sample_context(self) -> dict:
        """A JSON object."""
        value = self.cleaned_data.get("sample_context")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError('Give a JSON object, e.g. {"name": "Ada"}.')
        return value

    def clean(self) -> dict[str, Any]:
        """Refuse a subject, HTML or text that does not compile, on the field at fault."""
        cleaned = super().clean()
        sources = {part: cleaned.get(part) or "" for part in ("subject", "html", "text")}
        # The service stops at the first part that fails: check again without that part, so
        # every broken part gets its own error in one round trip.
        for _ in sources:
            try:
                template_validate_sources(**sources)
            except TemplateRenderError as exc:
                if exc.field not in sources:
                    self.add_error(None, exc.message)
                    break
                # A field that already failed its own checks keeps only that error.
                if exc.field in cleaned:
                    self.add_error(exc.field, exc.message)
                sources[exc.field] = ""
            else:
                break
        return cleaned


@admin.register(EmailTemplate)
class EmailTemplateAdmin(admin.ModelAdmin):
    """Templates, created and updated through the template services, with a live preview."""

    form = EmailTemplateForm
    list_display = ("slug", "name", "is_active", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("slug", "name")
    fieldsets = (
        (None, {"fields": ("slug", "name", "is_active")}),
        ("Content", {"fields": ("subject", "html", "text")}),
        ("Variables", {"fields": ("variables", "sample_context")}),
        ("Preview", {"fields": ("preview",)}),
        (None, {"fields": ("created_at", "updated_at")}),
    )

    def get_readonly_fields(
        self, request: HttpRequest, obj: EmailTemplate | None = None
    ) -> list[str]:
        """The slug is fixed once created: API callers send emails by slug."""
        readonly = ["preview", "created_at", "updated_at"]
        return ["slug", *readonly] if obj is not None else readonly

    def get_fieldsets(
        self, request: HttpRequest, obj: EmailTemplate | None = None
    ) -> tuple[tuple[Any, dict[str, Any]], ...]:
        """Without the preview and timestamps until the template exists."""
        if obj is None:
            return self.fieldsets[:3]
        return self.fieldsets

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        """No bulk delete: its confirmation page would list every email of a used template."""
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: EmailTemplate | None = None) -> bool:
        """Only templates no email or batch used; used ones are deactivated instead."""
        if obj is not None and (obj.emails.exists() or obj.batches.exists()):
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: EmailTemplate) -> None:
        """Delete through the service (which keeps a template that emails refer to)."""
        template_delete(template=obj)

    def save_model(
        self, request: HttpRequest, obj: EmailTemplate, form: forms.ModelForm, change: bool
    ) -> None:
        """Create or update through the services, which check the sources again."""
        fields = {name: form.cleaned_data[name] for name in TEMPLATE_FIELDS}
        created_by = f"admin user {request.user.get_username()}"
        if change:
            template_update(template=obj, created_by=created_by, **fields)
            return
        created = template_create(slug=form.cleaned_data["slug"], created_by=created_by, **fields)
        copy_saved_instance(target=obj, saved=created)

    @admin.display(description="preview")
    def preview(self, obj: EmailTemplate) -> SafeString | str:
        """The template rendered with its sample context (errors shown in place)."""
        if obj.pk is None:
            return "Save the template to see a preview."
        context = obj.sample_context if isinstance(obj.sample_context, dict) else {}
        notes = []
        try:
            template_check_context(template=obj, context=context)
        except ValidationFailed as exc:
            notes.append(f"The sample context is incomplete: {exc.message}")
        try:
            content = render_content(
                subject=obj.subject, html=obj.html, text=obj.text, context=context
            )
        except TemplateRenderError as exc:
            return error_block(f"{exc.field}: {exc.message}" if exc.field else exc.message)
        preview = rendered_parts(subject=content.subject, html=content.html, text=content.text)
        if notes:
            return format_html("{}{}", error_block(" ".join(notes)), preview)
        return preview
