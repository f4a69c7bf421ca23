"""The admin works in a real browser: log in and find the operator's starting points."""

from playwright.sync_api import expect


def test_operator_logs_in_and_sees_the_admin_home(logged_in, live_server, shots):
    """Logging in lands on the admin home with the outbox sections listed."""
    page = logged_in
    shots.take("home")

    expect(page.locator("#site-name")).to_contain_text("Mailqueue")
    expect(page.get_by_role("link", name="Email jobs")).to_be_visible()
    page.get_by_role("link", name="Capture inbox").first.click()
    expect(page).to_have_url(f"{live_server.url}/admin/mailqueue/capturedmessage/")
    shots.take("capture-inbox")
