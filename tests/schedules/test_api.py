"""The schedule API: create/list/detail/patch/delete, validation naming the field, isolation
between clients, pause/resume, run now, next_runs, and the run's batch."""

from datetime import UTC, datetime

import pytest

from mailqueue.models import EmailJob
from schedules.services import schedules_tick
from topics.models import Frequency

pytestmark = pytest.mark.django_db

URL = "/api/v1/schedules/"


def _create(api, **body):
    return api.post(URL, {"topic": "news", "cron": "0 9 * * *", **body}, format="json")


def test_create_then_detail_shows_next_runs_in_the_zone_and_utc(api, news):
    created = _create(api, timezone="Europe/Paris")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["topic"], body["priority"], body["missed"], body["active"]) == (
        "news",
        "low",
        "run_once",
        True,
    )
    detail = api.get(f"{URL}{body['id']}/").json()
    assert len(detail["next_runs"]) == 5
    first = detail["next_runs"][0]
    assert first["local"][11:16] == "09:00" and first["local"][-6:] in ("+01:00", "+02:00")
    assert first["utc"].endswith("Z") and first["utc"][11:13] in ("07", "08")
    assert detail["last_run"] is None
    assert [s["id"] for s in api.get(URL).json()["results"]] == [body["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "@yearly"}, "cron"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"recipients": ["a@example.com"]}, "topic"),
        ({"topic": None}, "recipients"),
        ({"topic": "nope"}, "topic"),
        ({"priority": "urgent"}, "priority"),
        ({"missed": "always"}, "missed"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, news, body, field):
    response = _create(api, **body)
    assert response.status_code == 400
    assert field in response.json()


def test_fixed_recipients_need_content(api, acme):
    response = api.post(URL, {"recipients": ["a@example.com"], "cron": "@daily"}, format="json")
    assert response.status_code == 400
    assert "template" in response.json()


def test_another_clients_schedule_is_404(api, api_for, news):
    schedule_id = _create(api).json()["id"]
    other = api_for("globex", ["send", "read"])
    for method, path in [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "pause/"),
        ("post", "resume/"),
        ("post", "run/"),
    ]:
        response = getattr(other, method)(f"{URL}{schedule_id}/{path}", {}, format="json")
        assert response.status_code == 404, (method, path)
    assert other.get(URL).json()["results"] == []


def test_patch_recomputes_next_run_and_checks_the_field(api, news):
    schedule_id = _create(api).json()["id"]
    patched = api.patch(f"{URL}{schedule_id}/", {"cron": "30 18 * * *"}, format="json")
    assert patched.status_code == 200
    assert patched.json()["next_run_at"][11:16] == "18:30"
    bad = api.patch(f"{URL}{schedule_id}/", {"timezone": "Nowhere"}, format="json")
    assert bad.status_code == 400 and "timezone" in bad.json()
    both = api.patch(f"{URL}{schedule_id}/", {"recipients": ["a@example.com"]}, format="json")
    assert both.status_code == 400 and "topic" in both.json()


def test_pause_resume_and_delete(api, news):
    schedule_id = _create(api).json()["id"]
    assert api.post(f"{URL}{schedule_id}/pause/").json()["active"] is False
    assert api.post(f"{URL}{schedule_id}/resume/").json()["active"] is True
    assert api.delete(f"{URL}{schedule_id}/").status_code == 204
    assert api.get(f"{URL}{schedule_id}/").status_code == 404


def test_run_now_makes_one_batch_shown_with_its_schedule(
    api, news, add_subscribers, django_capture_on_commit_callbacks
):
    add_subscribers(news, 3, context={"city": "Paris"})
    schedule_id = _create(api).json()["id"]
    api.post(f"{URL}{schedule_id}/pause/")

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{URL}{schedule_id}/run/")

    assert response.status_code == 202
    run = response.json()
    assert run["id"] == run["batch"] and run["count"] == 3 and run["manual"] is True
    batch = api.get(response["Location"]).json()
    assert batch["schedule"] == schedule_id
    assert batch["run_at"] == run["run_at"]
    assert batch["count"] == 3 and batch["template"] is None
    assert EmailJob.objects.filter(batch_id=run["batch"], topic="news").count() == 3
    detail = api.get(f"{URL}{schedule_id}/").json()
    assert detail["last_run"]["id"] == run["id"]


def test_run_now_of_a_large_topic_expands_one_chunk_and_the_scheduler_the_rest(
    api, news, add_subscribers, settings
):
    """The request does not wait for the whole audience: 202 after the first chunk."""
    settings.MAILQUEUE_SCHEDULE_CHUNK_SIZE = 2
    add_subscribers(news, 5)
    schedule_id = _create(api).json()["id"]

    response = api.post(f"{URL}{schedule_id}/run/")

    assert response.status_code == 202
    run = response.json()
    assert (run["count"], run["expanded"]) == (2, False)
    schedules_tick()
    assert api.get(response["Location"]).json()["count"] == 5


def test_a_frequency_runs_batch_does_not_link_its_hidden_schedule(api, news, add_subscribers):
    """The implicit schedule of a topic's frequencies is not in the API: `schedule` is null."""
    add_subscribers(news, 1, frequency=Frequency.HOURLY)
    [run] = schedules_tick(now=datetime(2026, 6, 1, 10, 0, 1, tzinfo=UTC))

    batch = api.get(f"/api/v1/batches/{run.pk}/").json()

    assert batch["schedule"] is None
    assert batch["run_at"] == "2026-06-01T10:00:00Z"
    assert api.get(f"{URL}{run.schedule_id}/").status_code == 404
