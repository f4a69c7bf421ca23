"""The Schedule admin: next-runs preview (saved, and live while cron and time zone are edited),
runs on the change page, run-now action."""

from datetime import datetime

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from mailqueue.models import Client
from schedules.models import Schedule, ScheduleRun
from schedules.services import schedule_create
from templates_app.models import EmailTemplate

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


def _add_form(client, **fields) -> dict:
    return {
        "client": str(client.pk),
        "name": "",
        "topic": "",
        "recipients": "[]",
        "template": "",
        "subject": "",
        "html": "",
        "text": "",
        "context": "{}",
        "cron": "0 9 * * *",
        "timezone": "UTC",
        "active": "on",
        "priority": "low",
        "missed": "run_once",
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"recipients": '["not an address"]', "subject": "Hi", "text": "t"},
            "is not a valid email",
        ),
        ({"recipients": '"a@example.com"', "subject": "Hi", "text": "t"}, "list of email"),
    ],
)
def test_bad_recipients_are_a_form_error(admin_client, acme, fields, message):
    response = admin_client.post(reverse("admin:schedules_schedule_add"), _add_form(acme, **fields))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Schedule.objects.exists()


def test_another_clients_topic_is_a_form_error(admin_client, api_for, news):
    other = api_for("globex", ["send"])
    other_client = Client.objects.get(name="globex")
    assert other is not None
    response = admin_client.post(
        reverse("admin:schedules_schedule_add"), _add_form(other_client, topic=str(news.pk))
    )
    assert response.status_code == 200
    assert "No topic with slug" in response.content.decode()
    assert not Schedule.objects.exists()


def test_a_valid_form_saves_through_the_services(admin_client, acme):
    response = admin_client.post(
        reverse("admin:schedules_schedule_add"),
        _add_form(acme, recipients='["A@Example.com"]', subject="Hi", text="t"),
    )
    assert response.status_code == 302
    assert Schedule.objects.get().recipients == ["a@example.com"]


def test_run_now_with_an_inactive_template_is_a_message(admin_client, acme, welcome_template):
    schedule = schedule_create(
        client=acme,
        recipients=["a@example.com"],
        template="welcome",
        cron="@daily",
        context={"name": "x"},
    )
    EmailTemplate.objects.filter(pk=welcome_template.pk).update(is_active=False)

    response = admin_client.post(
        reverse("admin:schedules_schedule_changelist"),
        {"action": "run_now", "_selected_action": [str(schedule.pk)]},
        follow=True,
    )

    assert response.status_code == 200
    assert "no longer active" in response.content.decode()
    assert not ScheduleRun.objects.exists()


PREVIEW_URL = "admin:schedules_schedule_preview"


def test_preview_lists_the_next_five_ticks_of_an_unsaved_cron(admin_client):
    """Weekdays at 09:00 Paris: five weekday mornings, 08:00Z in winter and 07:00Z in summer."""
    response = admin_client.get(
        reverse(PREVIEW_URL), {"cron": "0 9 * * 1-5", "timezone": "Europe/Paris"}
    )

    assert response.status_code == 200
    runs = response.json()["next_runs"]
    assert len(runs) == 5
    for run in runs:
        local = datetime.fromisoformat(run["local"])
        utc = datetime.fromisoformat(run["utc"])
        assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5
        assert run["utc"].endswith("Z") and local == utc
        assert utc.hour == (8 if local.utcoffset().total_seconds() == 3600 else 7)
    assert [run["utc"] for run in runs] == sorted({run["utc"] for run in runs})
    assert not Schedule.objects.exists()


@pytest.mark.parametrize(
    ("query", "field", "named"),
    [
        ({"cron": "0 9 * *", "timezone": "UTC"}, "cron", "five fields"),
        ({"cron": "0 25 * * *", "timezone": "UTC"}, "cron", "0 25 * * *"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone", "Mars/Olympus"),
    ],
)
def test_preview_of_a_bad_cron_or_zone_is_a_400_naming_the_field(admin_client, query, field, named):
    response = admin_client.get(reverse(PREVIEW_URL), query)

    assert response.status_code == 400
    body = response.json()
    assert body["field"] == field
    assert body["error"].startswith(f"{field}: ") and named in body["error"]


def test_preview_is_for_staff_who_may_view_schedules(client, django_user_model):
    query = {"cron": "@daily", "timezone": "UTC"}
    django_user_model.objects.create_user("member", password="pw")
    client.login(username="member", password="pw")
    assert client.get(reverse(PREVIEW_URL), query).status_code == 302  # to the admin login

    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.login(username="staff", password="pw")
    assert client.get(reverse(PREVIEW_URL), query).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="view_schedule"))
    assert client.get(reverse(PREVIEW_URL), query).status_code == 200
    assert client.post(reverse(PREVIEW_URL), query).status_code == 405


def test_add_and_change_forms_carry_the_live_preview(admin_client, acme):
    add = admin_client.get(reverse("admin:schedules_schedule_add")).content.decode()
    assert "schedules/schedule_preview.js" in add
    assert 'id="schedule-next-runs"' in add and "Shown once the schedule is saved." in add
    assert f'data-preview-url="{reverse(PREVIEW_URL)}"' in add

    schedule = schedule_create(
        client=acme, recipients=["a@example.com"], subject="Hi", text="t", cron="@daily"
    )
    change = admin_client.get(
        reverse("admin:schedules_schedule_change", args=[schedule.pk])
    ).content.decode()
    assert "schedules/schedule_preview.js" in change
    assert 'id="schedule-next-runs"' in change and "T00:00:00+00:00 (" in change


def test_a_refused_change_keeps_the_saved_zones_preview(admin_client, acme):
    """A save refused for a bad time zone re-shows the form with the error, and the preview
    area still shows ticks of a valid zone (the live preview then shows the error)."""
    schedule = schedule_create(
        client=acme, recipients=["a@example.com"], subject="Hi", text="t", cron="@daily"
    )

    response = admin_client.post(
        reverse("admin:schedules_schedule_change", args=[schedule.pk]),
        _add_form(
            acme,
            recipients='["a@example.com"]',
            subject="Hi",
            text="t",
            timezone="Mars/Olympus",
        ),
    )

    content = response.content.decode()
    assert response.status_code == 200
    assert "&#x27;Mars/Olympus&#x27; is not an IANA time zone" in content
    assert 'id="schedule-next-runs"' in content and "T09:00:00+00:00 (" in content
    schedule.refresh_from_db()
    assert (schedule.cron, schedule.timezone) == ("@daily", "UTC")
