"""The schedule form's next-runs preview follows the cron and time zone as they are typed."""

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.django_db(transaction=True)


def test_next_runs_follow_the_cron_being_typed(logged_in, live_server, shots):
    """Typing a cron and a zone on the add form shows their next runs, and a typo its error,
    before anything is saved."""
    page = logged_in
    page.goto(f"{live_server.url}/admin/schedules/schedule/add/")
    preview = page.locator("#schedule-next-runs")
    expect(preview).to_contain_text("Shown once the schedule is saved.")

    page.fill("#id_timezone", "Europe/Paris")
    page.fill("#id_cron", "30 9 * * 1-5")
    expect(preview.locator("li")).to_have_count(5)
    expect(preview.locator("li").first).to_contain_text("T09:30:00+0")
    shots.take("preview")

    page.fill("#id_cron", "30 9 * *")
    expect(preview.locator(".errorlist")).to_contain_text("cron: ")
    page.fill("#id_timezone", "Europe/Pariss")
    page.fill("#id_cron", "0 18 * * *")
    expect(preview.locator(".errorlist")).to_contain_text("timezone: ")
    shots.take("preview-error")
