"""Two real `rqscheduler` processes at once: a due schedule runs exactly once."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from schedules.models import Schedule, ScheduleRun
from schedules.services import schedule_create
from tests.live import live_env, process_logs, processes, wait_until
from topics.models import Subscriber, SubscriberStatus
from topics.services import topic_create


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_make_exactly_one_run(issued_key, tmp_path):
    topic = topic_create(
        client=issued_key.api_key.client, slug="news", name="News", subject="Hi", text="Hello"
    )
    Subscriber.objects.bulk_create(
        Subscriber(topic=topic, email=f"user{i}@example.com", status=SubscriberStatus.ACTIVE)
        for i in range(50)
    )
    # Once a year: the tick that is due is the only one the test can see run.
    schedule = schedule_create(client=topic.client, topic="news", cron="0 0 1 1 *")

    with processes([["rqscheduler"], ["rqscheduler"]], live_env(), tmp_path):
        Schedule.objects.filter(pk=schedule.pk).update(
            next_run_at=timezone.now() - timedelta(seconds=1)
        )
        wait_until(
            lambda: ScheduleRun.objects.filter(expanded_at__isnull=False).exists(),
            timeout=30,
            what="the schedule's run",
            logs=tmp_path,
        )
        # Several more passes of both schedulers.
        time.sleep(3)

    runs = list(ScheduleRun.objects.select_related("batch"))
    assert len(runs) == 1, process_logs(tmp_path)
    assert runs[0].batch.count == 50
    assert runs[0].batch.emails.count() == 50
