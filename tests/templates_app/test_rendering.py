"""Rendering stored templates: escaping, header safety and the locked-down template engine."""

import pytest

from mailqueue.errors import TemplateRenderError
from mailqueue.models import CapturedMessage, EmailJob, EmailStatus
from templates_app.models import EmailTemplateVersion
from templates_app.rendering import render_content
from templates_app.services import template_create
from tests.helpers import run_worker

TEMPLATES = "/api/v1/templates/"


def make_template(api, slug: str = "t", **parts):
    """Create a template through the API and return the response."""
    body = {"slug": slug, "name": slug, "subject": "Hi", "text": "x", **parts}
    return api.post(TEMPLATES, body, format="json")


def render(api, slug: str, context: dict):
    """Render a stored template through the API."""
    return api.post(f"{TEMPLATES}{slug}/render/", {"context": context}, format="json")


def test_html_is_autoescaped_but_subject_and_text_are_not(api, welcome_template):
    """`<b>` in the context is escaped in HTML and left as typed in the subject and text."""
    response = render(api, "welcome", {"name": "<b>Ada</b> & co"})

    body = response.json()
    assert body["html"] == "<p>Hello &lt;b&gt;Ada&lt;/b&gt; &amp; co</p>"
    assert body["subject"] == "Welcome, <b>Ada</b> & co!"
    assert body["text"] == "Hello <b>Ada</b> & co"


def test_safe_filter_lets_a_template_author_opt_out_of_escaping(api):
    """The author, not the sender's data, decides what HTML is trusted."""
    make_template(api, html="{{ snippet|safe }} {{ snippet }}")

    html = render(api, "t", {"snippet": "<i>x</i>"}).json()["html"]

    assert html == "<i>x</i> &lt;i&gt;x&lt;/i&gt;"


def test_subject_from_context_cannot_span_lines(api, welcome_template):
    """Newlines a context value puts into the subject are folded, so no header can be injected."""
    response = render(api, "welcome", {"name": "Ada\r\nBcc: victim@example.com"})

    assert response.json()["subject"] == "Welcome, Ada Bcc: victim@example.com!"


def test_injected_subject_adds_no_header_to_the_sent_message(
    api, welcome_template, django_capture_on_commit_callbacks
):
    """End to end: the message that goes out has one Subject line and no smuggled Bcc."""
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            "/api/v1/emails/",
            {
                "to": "ada@example.com",
                "template": "welcome",
                "context": {"name": "Ada\nBcc: victim@example.com"},
            },
            format="json",
        )

    run_worker()

    captured = CapturedMessage.objects.get()
    headers = captured.mime.split("\n\n", 1)[0]
    assert captured.subject == "Welcome, Ada Bcc: victim@example.com!"
    assert "\nBcc:" not in headers
    assert captured.to == ["ada@example.com"]


def test_sent_email_stores_what_was_rendered(
    api, welcome_template, django_capture_on_commit_callbacks
):
    """After delivery the email's subject is the rendered one, as the recipient saw it."""
    with django_capture_on_commit_callbacks(execute=True):
        email_id = api.post(
            "/api/v1/emails/",
            {"to": "ada@example.com", "template": "welcome", "context": {"name": "Ada"}},
            format="json",
        ).json()["id"]

    run_worker()

    assert api.get(f"/api/v1/emails/{email_id}/").json()["subject"] == "Welcome, Ada!"


def test_missing_optional_variable_renders_empty(api):
    """Variables not listed as required render as empty strings rather than failing."""
    make_template(api, text="Hi {{ name }}{% if coupon %}, code {{ coupon }}{% endif %}.")

    response = render(api, "t", {"name": "Ada"})

    assert response.status_code == 200
    assert response.json()["text"] == "Hi Ada."


def test_loops_and_nested_data_render(api):
    """Lists and objects from the JSON context work with for loops and dotted lookups."""
    make_template(
        api,
        text="{% for item in order.items %}{{ item.name }} x{{ item.qty }};{% endfor %}",
    )

    context = {"order": {"items": [{"name": "Tea", "qty": 2}, {"name": "Cake", "qty": 1}]}}
    response = render(api, "t", context)

    assert response.json()["text"] == "Tea x2;Cake x1;"


def test_load_is_refused_when_the_template_is_saved(api):
    """`{% load %}` of any tag library is a 400 on the part that uses it."""
    response = make_template(api, html="{% load humanize %}{{ n|intcomma }}")

    assert response.status_code == 400
    assert "html" in response.json()


@pytest.mark.parametrize(
    "source",
    ['{% include "/etc/passwd" %}', '{% extends "base.html" %}', '{% include "x.html" %}'],
)
def test_include_and_extends_cannot_read_files(api, source):
    """Including or extending a file is refused when the template is saved (400 on `html`)."""
    response = make_template(api, html=source)

    assert response.status_code == 400
    assert "html" in response.json()
    assert "root:" not in response.content.decode()


@pytest.mark.parametrize("source", ["[{% debug %}]", '{% url "admin:index" %}', "{% csrf_token %}"])
def test_tags_that_reveal_server_details_are_refused(api, source):
    """`debug` (context and modules), `url` (routes) and request-bound tags cannot be saved."""
    response = make_template(api, html=source)

    assert response.status_code == 400
    assert "html" in response.json()


def test_email_with_an_unrenderable_template_fails_with_a_clear_error(
    api, django_capture_on_commit_callbacks
):
    """At send time a template that cannot render fails the email (no retries) and says why."""
    make_template(api, slug="broken", html="<p>ok</p>")
    # A template that compiled once can still fail at send time (edited in the database by
    # hand, or a future Django refusing it); bypass the API's validation to get one.
    EmailTemplateVersion.objects.filter(template__slug="broken").update(
        html='{% include "x.html" %}'
    )
    with django_capture_on_commit_callbacks(execute=True):
        email_id = api.post(
            "/api/v1/emails/", {"to": "ada@example.com", "template": "broken"}, format="json"
        ).json()["id"]

    run_worker()

    email = EmailJob.objects.get(pk=email_id)
    assert email.status == EmailStatus.FAILED
    assert email.attempts == 1
    assert "html" in email.last_error


def test_private_attributes_are_unreachable(api):
    """Dunder lookups are a template error, not a way into Python objects."""
    response = make_template(api, html="{{ name.__class__ }}")

    assert response.status_code == 400
    assert "html" in response.json()


def test_render_error_is_400_naming_the_part(api):
    """A template that compiles but fails on the data is a 400 naming the part, not a 500."""
    make_template(api, text="{% for a, b in pairs %}{{ a }}{% endfor %}")

    response = render(api, "t", {"pairs": [1, 2]})

    assert response.status_code == 400
    assert "text" in response.json()


def test_render_content_reports_the_failing_part():
    """The rendering function raises TemplateRenderError with the part as its field."""
    with pytest.raises(TemplateRenderError) as info:
        render_content(subject="Hi", html="", text="{% if x %}", context={})

    assert info.value.field == "text"


def test_empty_parts_render_empty():
    """A template with only a text part renders an empty HTML part (and vice versa)."""
    rendered = render_content(subject="S {{ a }}", html="", text="T {{ a }}", context={"a": 1})

    assert (rendered.subject, rendered.html, rendered.text) == ("S 1", "", "T 1")


def test_editing_a_template_changes_what_the_next_render_produces(api):
    """Compiled templates are cached by source, so an edit takes effect immediately."""
    template_create(slug="news", name="News", subject="Issue {{ n }}", text="v1 {{ n }}")
    assert render(api, "news", {"n": 1}).json()["text"] == "v1 1"

    api.patch(f"{TEMPLATES}news/", {"text": "v2 {{ n }}"}, format="json")

    assert render(api, "news", {"n": 1}).json()["text"] == "v2 1"
