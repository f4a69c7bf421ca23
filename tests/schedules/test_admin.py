"""The Schedule admin: next-runs preview and runs on the change page, run-now action."""

import pytest
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
