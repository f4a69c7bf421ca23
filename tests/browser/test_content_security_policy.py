"""The admin under its Content-Security-Policy in Chromium: the policy is enforced (an injected
inline script does not run), and yet the pages, their scripts and the sandboxed previews all
work with no violation reported."""

import json

import pytest
from playwright.sync_api import Page, expect

from mailqueue.services import api_key_create, email_create

pytestmark = pytest.mark.django_db(transaction=True)

# A 1x1 GIF: images from data: URLs are allowed (the admin's and the emails' own).
PIXEL = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="
EMAIL_HTML = (
    "<style>p.note { color: rgb(1, 2, 3); }</style>"
    f'<p class="note">Hello <b>Ada</b></p><img id="pixel" src="{PIXEL}" alt="">'
)


def csp_violations(page: Page) -> list[str]:
    """A list that fills with the console's Content-Security-Policy reports from now on."""
    reports: list[str] = []
    page.on(
        "console",
        lambda message: (
            reports.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return reports


def test_an_injected_inline_script_is_refused(logged_in, live_server, shots):
    """The admin's answer carries the policy and Chromium enforces it: a script injected into
    the page does not run, and the refusal is reported."""
    page = logged_in
    reports = csp_violations(page)
    response = page.goto(f"{live_server.url}/admin/")
    assert "script-src 'self'" in response.headers["content-security-policy"]

    ran = page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.injectedRan = true";
            document.head.appendChild(script);
            return window.injectedRan === true;
        }"""
    )

    assert ran is False
    page.wait_for_timeout(200)
    assert any("inline script" in report for report in reports), reports


def test_the_template_editor_and_its_sandboxed_preview_work_under_the_policy(
    logged_in, live_server, shots
):
    """The editor's script (static, same origin) previews as one types; the sandboxed srcdoc
    frame renders the email's own <style> and data: image; no violation is reported."""
    page = logged_in
    reports = csp_violations(page)
    page.goto(f"{live_server.url}/admin/templates_app/emailtemplate/add/")
    page.fill("#id_slug", "csp-check")
    page.fill("#id_name", "CSP check")
    page.fill("#id_variables", json.dumps(["name"]))
    page.fill("#id_sample_context", json.dumps({"name": "Ada"}))
    page.fill("#id_subject", "Hi {{ name }}")
    page.fill("#id_text", "Hello {{ name }}")
    page.fill("#id_html", EMAIL_HTML.replace("Ada", "{{ name }}"))

    expect(page.locator("#template-preview-subject")).to_have_text("Hi Ada")
    frame = page.frame_locator("#template-preview-html")
    expect(frame.locator("b")).to_have_text("Ada")
    expect(frame.locator("p.note")).to_have_css("color", "rgb(1, 2, 3)")
    assert frame.locator("#pixel").evaluate("img => img.complete && img.naturalWidth") == 1
    shots.take("editor")

    assert reports == []


def test_dashboard_email_page_and_schedule_preview_report_no_violation(
    logged_in, live_server, shots
):
    """The dashboard, an email's page with its sandboxed HTML, the schedule form's next-runs
    preview (a script calling the admin), django-rq's dashboard and the API docs load and work
    without any violation."""
    page = logged_in
    reports = csp_violations(page)
    client = api_key_create(client_name="acme", scopes=["send"]).api_key.client
    email = email_create(
        client=client, to=["ada@example.com"], subject="Hi", html=EMAIL_HTML, text="Hello"
    )

    page.goto(f"{live_server.url}/admin/")
    expect(page.locator("#site-name")).to_contain_text("Mailqueue")
    page.goto(f"{live_server.url}/admin/mailqueue/emailjob/{email.pk}/change/")
    body = page.frame_locator("iframe[sandbox]").first
    expect(body.locator("b")).to_have_text("Ada")
    expect(body.locator("p.note")).to_have_css("color", "rgb(1, 2, 3)")
    shots.take("email")
    page.goto(f"{live_server.url}/admin/schedules/schedule/add/")
    page.fill("#id_timezone", "Europe/Paris")
    page.fill("#id_cron", "30 9 * * 1-5")
    expect(page.locator("#schedule-next-runs li")).to_have_count(5)
    shots.take("schedule")
    # Pages that bring inline scripts of their own get 'unsafe-inline' for scripts, no more.
    page.goto(f"{live_server.url}/django-rq/")
    expect(page.locator("#content")).to_contain_text("default")
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Mailqueue API")
    shots.take("api-docs")

    assert reports == []
