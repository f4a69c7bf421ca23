"""Admin for stored templates: edit through the services with a live preview, send a test email,
browse, diff and restore versions."""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.forms.fields import InvalidJSONInput
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from mailqueue.admin.helpers import admin_url, copy_saved_instance
from mailqueue.errors import MailqueueError, TemplateRenderError
from mailqueue.services import template_send_test
from templates_app.models import EmailTemplate
from templates_app.selectors import template_version_diff, template_version_list
from templates_app.services import (
    TEMPLATE_FIELDS,
    TemplatePreview,
    template_create,
    template_delete,
    template_preview,
    template_restore,
    template_update,
    template_validate_sources,
)

SOURCE_WIDGET_ATTRS = {"rows": 18, "cols": 100, "style": "font-family: monospace; width: 90%;"}
JSON_WIDGET_ATTRS = {"rows": 8, "cols": 80, "style": "font-family: monospace;"}
PREVIEW_PARTS = ("subject", "html", "text")


class IndentedJSONField(forms.JSONField):
    """A JSON textarea that shows its value indented, so a sample context is easy to edit."""

    def prepare_value(self, value: Any) -> Any:
        """The value as indented JSON (text the user typed is shown back unchanged)."""
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)

    def to_python(self, value: Any) -> Any:
        """The decoded value; malformed JSON is reported with the decoder's line and reason."""
        try:
            return super().to_python(value)
        except forms.ValidationError:
            if not isinstance(value, str):
                raise
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                raise forms.ValidationError(
                    f"Enter valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
                    code="invalid",
                ) from None
            raise


class TemplateSampleForm(forms.Form):
    """The required variables and the sample context, shared by the edit and preview forms."""

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


class TemplatePreviewForm(TemplateSampleForm):
    """What the live preview posts: the sources as typed, not saved."""

    # strip=False: leading and trailing whitespace is part of a text body.
    subject = forms.CharField(required=False, strip=False)
    html = forms.CharField(required=False, strip=False)
    text = forms.CharField(required=False, strip=False)


class EmailTemplateForm(TemplateSampleForm, forms.ModelForm):
    """Every field of a template; the sources must compile before the form is valid."""

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
            "track_opens",
            "track_clicks",
        )
        widgets = {
            "subject": forms.TextInput(
                attrs={"size": 100, "style": "font-family: monospace; width: 90%;"}
            ),
            "html": forms.Textarea(attrs=SOURCE_WIDGET_ATTRS),
            "text": forms.Textarea(attrs=SOURCE_WIDGET_ATTRS),
        }

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


class SendTestForm(forms.Form):
    """The address a test email goes to."""

    to = forms.EmailField(max_length=254)


def preview_payload(preview: TemplatePreview | None, errors: dict[str, str]) -> dict[str, Any]:
    """The live preview's JSON answer: each part (null when not rendered), errors, warnings."""
    return {
        "ok": preview is not None and preview.ok,
        **{part: getattr(preview, part) if preview else None for part in PREVIEW_PARTS},
        "errors": {**errors, **(preview.errors if preview else {})},
        "warnings": list(preview.warnings) if preview else [],
    }


@admin.register(EmailTemplate)
class EmailTemplateAdmin(admin.ModelAdmin):
    """Templates, created and updated through the template services, with a live preview."""

    form = EmailTemplateForm
    list_display = ("slug", "name", "is_active", "version", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("slug", "name")
    fieldsets = (
        (None, {"fields": ("slug", "name", "is_active")}),
        ("Content", {"fields": ("subject", "html", "text")}),
        ("Variables", {"fields": ("variables", "sample_context")}),
        (
            "Tracking",
            {
                "fields": ("track_opens", "track_clicks"),
                "description": "Unknown: the MAILQUEUE_TRACK_OPENS / MAILQUEUE_TRACK_CLICKS "
                "settings decide; a request's own track_opens / track_clicks wins.",
            },
        ),
        (None, {"fields": ("version", "created_at", "updated_at")}),
    )

    class Media:
        css = {"all": ["templates_app/template_admin.css"]}
        js = ["templates_app/template_preview.js"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: EmailTemplate | None = None
    ) -> list[str]:
        """The slug is fixed once created: API callers send emails by slug."""
        readonly = ["version", "created_at", "updated_at"]
        return ["slug", *readonly] if obj is not None else readonly

    def get_fieldsets(
        self, request: HttpRequest, obj: EmailTemplate | None = None
    ) -> tuple[tuple[Any, dict[str, Any]], ...]:
        """Without the version and timestamps until the template exists."""
        if obj is None:
            return self.fieldsets[:4]
        return self.fieldsets

    def get_urls(self) -> list:
        """The default URLs plus the live preview, the test send and the versions."""
        preview = require_POST(self.preview_view)
        return [
            admin_url(self, "preview/", preview, "preview_add"),
            admin_url(self, "<path:object_id>/preview/", preview, "preview"),
            admin_url(
                self, "<path:object_id>/send-test/", require_POST(self.send_test_view), "send_test"
            ),
            admin_url(
                self, "<path:object_id>/versions/<int:number>/", self.version_view, "version"
            ),
            admin_url(
                self,
                "<path:object_id>/versions/<int:number>/restore/",
                require_POST(self.restore_view),
                "restore",
            ),
            *super().get_urls(),
        ]

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
        created_by = self._author(request)
        if change:
            template_update(template=obj, created_by=created_by, **fields)
            return
        created = template_create(slug=form.cleaned_data["slug"], created_by=created_by, **fields)
        copy_saved_instance(target=obj, saved=created)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: EmailTemplate | None = None,
    ) -> HttpResponse:
        """The form with the live preview panel; once saved, the test send and the versions."""
        info = self.opts.app_label, self.opts.model_name
        if obj is None:
            if self.has_add_permission(request):
                context["preview_url"] = reverse("admin:{}_{}_preview_add".format(*info))
        else:
            can_change = self.has_change_permission(request, obj)
            if can_change:
                context["preview_url"] = reverse("admin:{}_{}_preview".format(*info), args=[obj.pk])
            # The saved template's preview, so the page is complete before the script runs.
            context["initial_preview"] = template_preview(
                subject=obj.subject,
                html=obj.html,
                text=obj.text,
                context=obj.sample_context if isinstance(obj.sample_context, dict) else {},
                variables=obj.variables if isinstance(obj.variables, list) else [],
            )
            context["can_send_test"] = can_change and obj.is_active
            context["template_versions"] = template_version_list(template=obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def preview_view(self, request: HttpRequest, object_id: str | None = None) -> JsonResponse:
        """Render the posted, unsaved sources with the posted sample context (POST, JSON)."""
        if object_id is None:
            allowed = self.has_add_permission(request)
        else:
            allowed = self.has_change_permission(request, self._get_template(request, object_id))
        if not allowed:
            raise PermissionDenied
        form = TemplatePreviewForm(request.POST)
        # A draft with errors is what the editor is for: it is answered with 200 and the
        # errors, never a 4xx that would be logged on every keystroke.
        if not form.is_valid():
            errors = {field: " ".join(problems) for field, problems in form.errors.items()}
            return JsonResponse(preview_payload(None, errors))
        data = form.cleaned_data
        preview = template_preview(
            subject=data["subject"],
            html=data["html"],
            text=data["text"],
            context=data["sample_context"],
            variables=data["variables"],
        )
        return JsonResponse(preview_payload(preview, {}))

    def send_test_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Queue the saved template, with its sample context, to the address typed (POST)."""
        template = self._get_template(request, object_id)
        if not self.has_change_permission(request, template):
            raise PermissionDenied
        change_url = reverse("admin:templates_app_emailtemplate_change", args=[template.pk])
        if not template.is_active:
            messages.error(request, "Test email not sent: the template is not active.")
            return HttpResponseRedirect(change_url)
        form = SendTestForm(request.POST)
        if not form.is_valid():
            address = request.POST.get("to", "").strip()
            messages.error(
                request,
                f"Test email not sent: '{address}' is not a valid email address."
                if address
                else "Test email not sent: type the address to send it to.",
            )
            return HttpResponseRedirect(change_url)
        try:
            email = template_send_test(
                template=template, to=form.cleaned_data["to"], user=request.user
            )
        except MailqueueError as exc:
            messages.error(request, f"Test email not sent: {exc.message}")
            return HttpResponseRedirect(change_url)
        messages.success(
            request,
            format_html(
                'Test email to {} queued at high priority: <a href="{}">view email {}</a>.',
                form.cleaned_data["to"],
                reverse("admin:mailqueue_emailjob_change", args=[email.pk]),
                email.pk,
            ),
        )
        return HttpResponseRedirect(change_url)

    def version_view(self, request: HttpRequest, object_id: str, number: int) -> HttpResponse:
        """One version diffed against the current content, with a restore button."""
        template = self._get_template(request, object_id)
        if not self.has_view_or_change_permission(request, template):
            raise PermissionDenied
        diff = template_version_diff(template=template, number=number)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{template.slug}: version {number} against the current content",
            "opts": self.opts,
            "original": template,
            "diff": diff,
            "can_restore": self.has_change_permission(request, template) and diff.changed,
        }
        return TemplateResponse(
            request, "admin/templates_app/emailtemplate/version_diff.html", context
        )

    def restore_view(self, request: HttpRequest, object_id: str, number: int) -> HttpResponse:
        """Make an old version's content current again, as a new version (POST)."""
        template = self._get_template(request, object_id)
        if not self.has_change_permission(request, template):
            raise PermissionDenied
        before = template.version
        try:
            template = template_restore(
                template=template, number=number, created_by=self._author(request)
            )
        except MailqueueError as exc:
            messages.error(request, f"Version {number} not restored: {exc.message}")
        else:
            if template.version == before:
                messages.info(
                    request, f"Version {number} has the current content: nothing to restore."
                )
            else:
                messages.success(
                    request, f"Restored version {number} as version {template.version}."
                )
        return HttpResponseRedirect(
            reverse("admin:templates_app_emailtemplate_change", args=[template.pk])
        )

    def _get_template(self, request: HttpRequest, object_id: str) -> EmailTemplate:
        template = self.get_object(request, unquote(object_id))
        if template is None:
            raise Http404("No such template.")
        return template

    @staticmethod
    def _author(request: HttpRequest) -> str:
        # The author each version records, as the API records its key.
        return f"admin user {request.user.get_username()}"
