"""The template editor in the admin: live preview, test send, versions with diff and restore."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.http import HttpResponse
from django.urls import reverse

from mailqueue.models import EmailJob, Priority
from templates_app.models import EmailTemplate, EmailTemplateVersion
from templates_app.services import template_update
from tests.helpers import queue_lengths

pytestmark = pytest.mark.django_db

PREVIEW_ADD = "admin:templates_app_emailtemplate_preview_add"


def change_url(template: EmailTemplate) -> str:
    """The template's admin change page."""
    return reverse("admin:templates_app_emailtemplate_change", args=[template.pk])


def version_url(template: EmailTemplate, number: int) -> str:
    """The diff page of one version."""
    return reverse("admin:templates_app_emailtemplate_version", args=[template.pk, number])


def draft(**overrides: str) -> dict[str, str]:
    """What the preview script posts: the form's values, as typed."""
    return {
        "subject": "Hello {{ name }}",
        "html": "<p>Hi <b>{{ name }}</b></p>",
        "text": "Hi {{ name }}",
        "variables": '["name"]',
        "sample_context": '{"name": "Ada"}',
        **overrides,
    }


def preview(client, **overrides: str) -> dict:
    """Post a draft to the add page's preview URL and return the JSON answer."""
    response = client.post(reverse(PREVIEW_ADD), draft(**overrides))
    assert response.status_code == 200, response.content[:300]
    return response.json()


def page_messages(response: HttpResponse) -> list[str]:
    """The messages shown on a page."""
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- Live preview -----------------------------------------------------------------------------


def test_preview_renders_each_part_without_saving(admin_client):
    """The draft's subject, HTML and text come back rendered; no template is created."""
    body = preview(admin_client)

    assert body == {
        "ok": True,
        "subject": "Hello Ada",
        "html": "<p>Hi <b>Ada</b></p>",
        "text": "Hi Ada",
        "errors": {},
        "warnings": [],
    }
    assert not EmailTemplate.objects.exists()


def test_preview_of_a_saved_template_uses_the_posted_draft(admin_client, welcome_template):
    """On the change page the preview shows what is typed, not what is saved."""
    url = reverse("admin:templates_app_emailtemplate_preview", args=[welcome_template.pk])

    body = admin_client.post(url, draft(subject="Bonjour {{ name }}")).json()

    assert body["subject"] == "Bonjour Ada"
    welcome_template.refresh_from_db()
    assert welcome_template.subject == "Welcome, {{ name }}!"


def test_preview_escapes_context_values_in_html_only(admin_client):
    """A value with markup is escaped in the HTML part, kept as is in the text part."""
    body = preview(admin_client, sample_context='{"name": "<script>alert(1)</script>"}')

    assert body["html"] == "<p>Hi <b>&lt;script&gt;alert(1)&lt;/script&gt;</b></p>"
    assert body["text"] == "Hi <script>alert(1)</script>"


@pytest.mark.parametrize(
    ("field", "source", "expected"),
    [
        ("html", "<p>Hi</p>\n{% if name %}\n<p>{{ name }}</p>", ["line 2", "endif"]),
        ("text", "Hi\n\n{{ name|nosuchfilter }}", ["line 3", "nosuchfilter"]),
        ("subject", "Hi {% if %}{% endif %}", ["line 1"]),
    ],
)
def test_preview_reports_the_failing_part_with_its_line(admin_client, field, source, expected):
    """A part that does not compile is an error on that field naming the line; the rest renders."""
    body = preview(admin_client, **{field: source})

    assert body["ok"] is False
    assert list(body["errors"]) == [field]
    for fragment in expected:
        assert fragment in body["errors"][field]
    assert body[field] is None
    others = {"subject": "Hello Ada", "html": "<p>Hi <b>Ada</b></p>", "text": "Hi Ada"}
    del others[field]
    assert {part: body[part] for part in others} == others


def test_preview_reports_every_broken_part_at_once(admin_client):
    """Two broken parts each get their own error in one answer."""
    body = preview(admin_client, html="{{ name|nosuchfilter }}", text="{% for x in y %}")

    assert sorted(body["errors"]) == ["html", "text"]
    assert body["subject"] == "Hello Ada"


def test_preview_warns_about_a_missing_variable_and_still_renders(admin_client):
    """A required variable missing from the sample is a warning; the preview renders without it."""
    body = preview(admin_client, variables='["name", "code"]')

    assert body["ok"] is True
    assert body["subject"] == "Hello Ada"
    [warning] = body["warnings"]
    assert "code" in warning
    assert "name" not in warning.split("variable(s)")[1]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("sample_context", '{"name": "Ada",}', "line 1, column 16"),
        ("sample_context", '["Ada"]', "JSON object"),
        ("variables", '"name"', "JSON list"),
    ],
)
def test_preview_reports_an_unusable_sample_on_its_field(admin_client, field, value, expected):
    """Malformed JSON (with where it breaks) or the wrong shape is an error on that field."""
    body = preview(admin_client, **{field: value})

    assert body["ok"] is False
    assert list(body["errors"]) == [field]
    assert expected in body["errors"][field]
    assert (body["subject"], body["html"], body["text"]) == (None, None, None)


def test_preview_only_answers_staff_with_permission_and_posts(
    client, admin_client, django_user_model, welcome_template
):
    """GET is refused; anonymous and non-staff users go to the login; staff need the permission."""
    change_preview = reverse(
        "admin:templates_app_emailtemplate_preview", args=[welcome_template.pk]
    )
    assert admin_client.get(reverse(PREVIEW_ADD)).status_code == 405

    assert client.post(reverse(PREVIEW_ADD), draft()).status_code == 302
    visitor = django_user_model.objects.create_user("visitor", password="pw")
    client.force_login(visitor)
    assert client.post(reverse(PREVIEW_ADD), draft()).status_code == 302

    reader = django_user_model.objects.create_user("reader", password="pw", is_staff=True)
    reader.user_permissions.add(Permission.objects.get(codename="view_emailtemplate"))
    client.force_login(reader)
    assert client.post(reverse(PREVIEW_ADD), draft()).status_code == 403
    assert client.post(change_preview, draft()).status_code == 403

    reader.user_permissions.add(Permission.objects.get(codename="change_emailtemplate"))
    client.force_login(reader)
    assert client.post(change_preview, draft()).json()["ok"] is True
    assert client.post(reverse(PREVIEW_ADD), draft()).status_code == 403


def test_editor_pages_load_the_script_and_the_preview_panel(admin_client, welcome_template):
    """Add and change pages include the script and every element it drives, by stable id."""
    ids = [
        'id="template-preview"',
        'id="template-preview-subject"',
        'id="template-preview-html"',
        'id="template-preview-text"',
        'id="template-preview-errors"',
        'id="template-preview-warnings"',
    ]
    add_page = admin_client.get(reverse("admin:templates_app_emailtemplate_add")).content.decode()
    page = admin_client.get(change_url(welcome_template)).content.decode()

    for html, preview_url in (
        (add_page, reverse(PREVIEW_ADD)),
        (page, reverse("admin:templates_app_emailtemplate_preview", args=[welcome_template.pk])),
    ):
        assert "templates_app/template_preview.js" in html
        assert f'data-preview-url="{preview_url}"' in html
        for element_id in ids:
            assert element_id in html
    assert re.search(r'<iframe sandbox="" id="template-preview-html"[^>]*srcdoc="', page)
    # The saved template is rendered in the panel before the script runs.
    assert "Welcome, Ada!</p>" in page
    assert "Hello Ada</pre>" in page


def test_initial_preview_cannot_break_out_of_the_iframe(admin_client, welcome_template):
    """Rendered HTML is attribute-escaped in srcdoc, whatever the template contains."""
    template_update(
        template=welcome_template, html='<p title="x">{{ name }}</p>"><script>alert(1)</script>'
    )

    page = admin_client.get(change_url(welcome_template)).content.decode()

    assert "<script>alert(1)</script>" not in page
    assert (
        'srcdoc="&lt;p title=&quot;x&quot;&gt;Ada&lt;/p&gt;&quot;&gt;&lt;script&gt;alert(1)' in page
    )


def test_a_template_that_does_not_compile_still_cannot_be_saved(admin_client, welcome_template):
    """The editor previews broken drafts, but saving one is refused on the field at fault."""
    data = {
        "name": "Welcome",
        "is_active": "on",
        "subject": "Welcome",
        "html": "<p>{{ name|nosuchfilter }}</p>",
        "text": "",
        "variables": "[]",
        "sample_context": "{}",
    }

    response = admin_client.post(change_url(welcome_template), data)

    assert response.status_code == 200
    assert "nosuchfilter" in response.context["adminform"].form.errors["html"][0]
    welcome_template.refresh_from_db()
    assert welcome_template.html == "<p>Hello {{ name }}</p>"


# --- Send test email --------------------------------------------------------------------------


def test_send_test_queues_a_high_priority_email_with_the_sample(
    admin_client, admin_user, welcome_template, django_capture_on_commit_callbacks
):
    """The address typed gets the template with its sample context, queued on `high`."""
    url = reverse("admin:templates_app_emailtemplate_send_test", args=[welcome_template.pk])
    page = admin_client.get(change_url(welcome_template)).content.decode()
    assert 'id="test-send-to"' in page
    assert 'id="test-send-button"' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"to": "qa@example.com"})

    email = EmailJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == change_url(welcome_template)
    assert email.to == ["qa@example.com"]
    assert email.priority == Priority.HIGH
    assert email.template == welcome_template
    assert email.context == {"name": "Ada"}
    assert email.created_by_user == admin_user
    assert queue_lengths()["high"] == 1
    [message] = page_messages(response)
    assert reverse("admin:mailqueue_emailjob_change", args=[email.pk]) in message


@pytest.mark.parametrize("address", ["not-an-address", "", "qa@example.com\nBcc: x@example.com"])
def test_send_test_refuses_a_bad_address(admin_client, welcome_template, address):
    """A malformed address is reported and nothing is queued."""
    url = reverse("admin:templates_app_emailtemplate_send_test", args=[welcome_template.pk])

    response = admin_client.post(url, {"to": address}, follow=True)

    assert not EmailJob.objects.exists()
    [message] = page_messages(response)
    assert message.startswith("Test email not sent")


def test_send_test_refuses_an_incomplete_sample_and_an_inactive_template(
    admin_client, welcome_template
):
    """A sample context without a required variable, or an inactive template, sends nothing."""
    url = reverse("admin:templates_app_emailtemplate_send_test", args=[welcome_template.pk])
    EmailTemplate.objects.filter(pk=welcome_template.pk).update(sample_context={})
    response = admin_client.post(url, {"to": "qa@example.com"}, follow=True)
    assert "name" in page_messages(response)[0]

    EmailTemplate.objects.filter(pk=welcome_template.pk).update(is_active=False)
    response = admin_client.post(url, {"to": "qa@example.com"}, follow=True)
    assert "not active" in page_messages(response)[0]
    assert 'id="test-send-button"' not in response.content.decode()
    assert not EmailJob.objects.exists()


# --- Versions ---------------------------------------------------------------------------------


@pytest.fixture
def edited_template(welcome_template) -> EmailTemplate:
    """The welcome template changed twice: three versions, the last two by admin users."""
    template_update(
        template=welcome_template,
        created_by="admin user bob",
        html="<p>Hello {{ name }}</p>\n<p>See you soon</p>",
    )
    template_update(
        template=welcome_template,
        created_by="admin user carol",
        subject="Hi {{ name }}",
        sample_context={"name": "Grace"},
    )
    return welcome_template


def test_change_page_lists_versions_newest_first(admin_client, edited_template):
    """Each version with who and when, the current one marked, each with a diff link."""
    page = admin_client.get(change_url(edited_template)).content.decode()

    assert 'id="template-current-version">3<' in page
    rows = re.findall(r'<tr id="template-version-(\d+)">(.*?)</tr>', page, re.S)
    assert [number for number, _ in rows] == ["3", "2", "1"]
    assert "admin user carol" in rows[0][1]
    assert "(current)" in rows[0][1]
    assert "admin user bob" in rows[1][1]
    for number, row in rows:
        assert f'href="{version_url(edited_template, int(number))}"' in row


def test_diff_page_shows_removed_and_added_lines_escaped(admin_client, edited_template):
    """Version 1 against the current content: what restoring it would take away and bring back."""
    response = admin_client.get(version_url(edited_template, 1))
    page = response.content.decode()

    assert response.status_code == 200
    subject = page.split('id="template-diff-subject"')[1].split("</section>")[0]
    assert '<span class="mq-diff-line mq-diff-removed">-Welcome, {{ name }}!</span>' in subject
    assert '<span class="mq-diff-line mq-diff-added">+Hi {{ name }}</span>' in subject
    html = page.split('id="template-diff-html"')[1].split("</section>")[0]
    assert "+&lt;p&gt;See you soon&lt;/p&gt;" in html
    assert "<p>See you soon</p>" not in page
    assert "text (unchanged)" in page
    assert "+  &quot;name&quot;: &quot;Grace&quot;" in page
    assert 'id="template-restore-button"' in page


def test_diff_page_of_the_current_version_offers_no_restore(admin_client, edited_template):
    """The current version has nothing to restore; a missing version is a 404."""
    page = admin_client.get(version_url(edited_template, 3)).content.decode()

    assert "same content as the current version" in page
    assert 'id="template-restore-button"' not in page
    assert admin_client.get(version_url(edited_template, 9)).status_code == 404


def test_restore_makes_an_old_version_current_as_a_new_version(
    admin_client, admin_user, edited_template
):
    """Restoring version 1 adds version 4 with version 1's content, by the admin user."""
    url = reverse("admin:templates_app_emailtemplate_restore", args=[edited_template.pk, 1])
    assert admin_client.get(url).status_code == 405

    response = admin_client.post(url)

    assert response.status_code == 302
    assert response["Location"] == change_url(edited_template)
    assert page_messages(response) == ["Restored version 1 as version 4."]
    edited_template.refresh_from_db()
    assert edited_template.version == 4
    assert (edited_template.subject, edited_template.html) == (
        "Welcome, {{ name }}!",
        "<p>Hello {{ name }}</p>",
    )
    assert edited_template.sample_context == {"name": "Ada"}
    restored = EmailTemplateVersion.objects.get(template=edited_template, number=4)
    assert restored.created_by == f"admin user {admin_user.get_username()} (restore of v1)"
    assert EmailTemplateVersion.objects.filter(template=edited_template).count() == 4


def test_restore_needs_the_change_permission(client, django_user_model, edited_template):
    """A staff user who may only view templates can read a diff but not restore."""
    reader = django_user_model.objects.create_user("reader", password="pw", is_staff=True)
    reader.user_permissions.add(Permission.objects.get(codename="view_emailtemplate"))
    client.force_login(reader)
    url = reverse("admin:templates_app_emailtemplate_restore", args=[edited_template.pk, 1])

    page = client.get(version_url(edited_template, 1)).content.decode()

    assert 'id="template-restore-button"' not in page
    assert client.post(url).status_code == 403
    edited_template.refresh_from_db()
    assert edited_template.version == 3
