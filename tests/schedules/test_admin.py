"""The Schedule admin: next-runs preview and runs on the change page, run-now action."""

import pytest
from django.urls import reverse

from schedules.models import ScheduleRun
from schedules.services import schedule_create

pytestmark = pytest.mark.django_db


def test_change_page_previews_next_runs_and_lists_runs(admin_client, news, add_subscribers):
    add_subscribers(news, 2)
    schedule = schedule_create(
        client=news.client, topic="news", cron="0 9 * * *", timezone="Europe/Paris"
    )
    response = admin_client.post(
        reverse("admin:schedules_schedule_changelist"),
        {"action": "run_now", "_selected_action": [str(schedule.pk)]},
    )
    assert response.status_code == 302
    assert ScheduleRun.objects.filter(schedule=schedule).count() == 1

    page = admin_client.get(reverse("admin:schedules_schedule_change", args=[schedule.pk]))
    content = page.content.decode().lower()
    assert page.status_code == 200
    assert "next runs" in content and "09:00:00+0" in content
    assert "2 email(s) (run now)" in content
    assert admin_client.get(reverse("admin:schedules_schedule_changelist")).status_code == 200
