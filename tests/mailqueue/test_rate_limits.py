"""Shared rate limits (MAILQUEUE_RATE_LIMITS): the setting, the GCRA script against the real
Redis, delivery waiting without an attempt and in order, and real worker processes sharing one
limit. The API throttle shares its counts through the same script."""

import itertools
import json
import logging
import subprocess
import sys
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db.models import Min

from mailqueue import conf, rate_limits
from mailqueue.metrics.counters import counters_read
from mailqueue.models import CapturedMessage, DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.rate_limits import KEY_PREFIX, RateLimit, buckets_acquire, rate_limits_acquire
from mailqueue.scheduling import connection as redis_connection
from tests.helpers import DOWN_REDIS
from tests.live import PROJECT_DIR, live_env
from tracking.models import EventType

SMTP_FAST = RateLimit("smtp", count=5, period=1.0, burst=3)
# A port nothing listens on: connections are refused at once (an outage of the smtp provider).
DOWN_PORT = 9


def take(limits: list[RateLimit], priority: str = "default", within: float = 0.0):
    """One check of the buckets, as the workers make it."""
    return buckets_acquire(limits, priority=priority, reserve_within=within)


# --- The setting -----------------------------------------------------------------------------


def test_the_setting_names_providers_and_domains(settings):
    """Rates per second or minute, a burst after the colon (default 1), domains lowercased."""
    settings.MAILQUEUE_RATE_LIMITS = "amazon_ses=14/s:28, domain:Gmail.com=20/min,smtp=2.5/s"

    limits = conf.rate_limits()

    assert limits["amazon_ses"] == RateLimit("amazon_ses", 14, 1.0, 28)
    assert limits["domain:gmail.com"] == RateLimit("domain:gmail.com", 20, 60.0, 1)
    assert limits["smtp"].interval == pytest.approx(0.4)


def test_no_limits_by_default():
    """Nothing set: no limits."""
    assert conf.rate_limits() == {}


@pytest.mark.parametrize(
    "entry",
    ["smtp=10", "smtp=10/h", "smtp=0/s", "smtp=5/s:0", "gmail.com=5/s", "domain:=5/s", "nope=1/s"],
)
def test_a_malformed_entry_is_refused_naming_the_setting_and_the_entry(settings, entry):
    """A bad entry (no unit, an unknown unit or provider, a zero rate) is named in the error."""
    settings.MAILQUEUE_RATE_LIMITS = f"capture=10/s:10, {entry}"

    with pytest.raises(ImproperlyConfigured, match="MAILQUEUE_RATE_LIMITS") as excinfo:
        conf.rate_limits()

    assert entry in str(excinfo.value)


def test_manage_check_stops_on_a_bad_limit_or_reserve(settings):
    """`manage.py check` reports both options through mailqueue.E003."""
    settings.MAILQUEUE_RATE_LIMITS = "domain:gmail.com=5/hour"
    settings.MAILQUEUE_RATE_LIMIT_HIGH_RESERVE = 1.5

    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check")

    assert "MAILQUEUE_RATE_LIMITS" in str(excinfo.value)
    assert "domain:gmail.com=5/hour" in str(excinfo.value)
    assert "MAILQUEUE_RATE_LIMIT_HIGH_RESERVE" in str(excinfo.value)


def test_without_limits_redis_is_never_asked(settings, caplog, monkeypatch):
    """No limits configured: an email goes at once even with Redis unreachable, and nothing
    tried to reach it (no warning, no back-off)."""
    monkeypatch.setattr(rate_limits, "_skip_until", 0.0)
    settings.RQ_QUEUES = DOWN_REDIS

    with caplog.at_level(logging.WARNING, logger="mailqueue.rate_limits"):
        acquired = rate_limits_acquire(
            provider="smtp", recipients=["a@gmail.com"], priority="default"
        )

    assert acquired.wait == 0 and acquired.booked
    assert caplog.records == []
    assert rate_limits._skip_until == 0.0


def test_redis_down_lets_mail_go_with_a_warning_and_a_back_off(settings, caplog, monkeypatch):
    """Limits configured but Redis unreachable: fail open, warn once, skip Redis for a while."""
    monkeypatch.setattr(rate_limits, "_skip_until", 0.0)
    settings.MAILQUEUE_RATE_LIMITS = "smtp=1/min"
    settings.RQ_QUEUES = DOWN_REDIS

    with caplog.at_level(logging.WARNING, logger="mailqueue.rate_limits"):
        answers = [
            rate_limits_acquire(provider="smtp", recipients=["a@b.c"], priority="low")
            for _ in range(3)
        ]

    assert all(answer.booked and answer.wait == 0 for answer in answers)
    assert len(caplog.records) == 1
    assert "Redis unavailable" in caplog.records[0].getMessage()
    assert rate_limits._skip_until > time.monotonic()


# --- The script against the real Redis -------------------------------------------------------


def test_burst_then_the_rate():
    """5/s with a burst of 3: three at once, then one every 0.2 s."""
    answers = [take([SMTP_FAST]) for _ in range(4)]

    assert [a.booked for a in answers] == [True, True, True, False]
    assert [a.wait for a in answers[:3]] == [0, 0, 0]
    assert 0 < answers[3].wait <= 0.2
    assert answers[3].limit == SMTP_FAST

    time.sleep(answers[3].wait)
    assert take([SMTP_FAST]).booked
    assert not take([SMTP_FAST]).booked


def test_booking_hands_out_slots_in_the_order_asked():
    """Within the booking horizon, each caller gets the next slot (no fight over each one);
    beyond it, nothing is taken."""
    limit = RateLimit("smtp", count=1, period=1.0, burst=1)

    answers, slots = [], []
    for _ in range(8):
        answers.append(take([limit], within=5.5))
        slots.append(time.monotonic() + answers[-1].wait)

    assert [a.booked for a in answers] == [True] * 6 + [False] * 2
    assert answers[0].wait == 0
    # Each booked slot is one interval after the one before (give or take the round trip).
    assert all(0.95 < later - earlier < 1.05 for earlier, later in itertools.pairwise(slots[:6]))
    # The refused ones took nothing: both are told the same next slot.
    assert slots[6] == pytest.approx(slots[7], abs=0.05)


def test_a_low_flood_cannot_take_the_reserve_of_high(settings):
    """default/low wait while the bucket holds less than the reserve; high may use it all."""
    settings.MAILQUEUE_RATE_LIMIT_HIGH_RESERVE = 0.5
    limit = RateLimit("smtp", count=1, period=60.0, burst=10)

    low = [take([limit], priority="low").booked for _ in range(8)]
    high = [take([limit], priority="high").booked for _ in range(6)]

    # 10 tokens: low goes while 5 or more are left (10, 9, 8, 7, 6, 5), high takes the rest.
    assert low == [True] * 6 + [False] * 2
    assert high == [True] * 4 + [False] * 2


def test_all_limits_of_an_email_are_taken_or_none():
    """A refused domain leaves the provider's bucket untouched."""
    provider = RateLimit("smtp", count=1, period=60.0, burst=5)
    gmail = RateLimit("domain:gmail.com", count=1, period=60.0, burst=1)

    assert take([provider, gmail]).booked
    refused = take([provider, gmail])

    assert not refused.booked and refused.limit == gmail
    assert 59 < refused.wait <= 60
    # The provider lost one token (the first email), not two: four more go.
    assert [take([provider]).booked for _ in range(5)] == [True] * 4 + [False]


def test_the_buckets_run_on_the_redis_servers_clock_and_expire():
    """The stored arrival time is on Redis's clock (hosts' clocks may differ); keys expire
    once their bucket would be full again."""
    limit = RateLimit("smtp", count=2, period=1.0, burst=4)
    redis = redis_connection()

    take([limit])
    seconds, microseconds = redis.time()
    stored = int(redis.get(limit.key))

    server_now = seconds * 1_000_000 + microseconds
    assert 0 < stored - server_now <= 500_000  # one interval ahead, on the server's clock
    assert 0 < redis.pttl(limit.key) <= 501
    assert limit.key.startswith(KEY_PREFIX)


def test_an_email_falls_under_its_provider_and_each_limited_domain(settings):
    """to/cc/bcc domains with a limit count; others and other providers do not."""
    settings.MAILQUEUE_RATE_LIMITS = "smtp=1/min, domain:gmail.com=1/min, domain:yahoo.com=1/min"

    first = rate_limits_acquire(
        provider="capture", recipients=["Ann <ann@GMAIL.com>", "bo@other.org"], priority="low"
    )
    second = rate_limits_acquire(provider="capture", recipients=["cy@gmail.com"], priority="low")
    third = rate_limits_acquire(provider="capture", recipients=["di@yahoo.com"], priority="low")

    assert first.booked and third.booked
    assert not second.booked and second.limit.name == "domain:gmail.com"


# --- Delivery --------------------------------------------------------------------------------


@pytest.fixture
def limited(settings):
    """Sends go to the capture inbox through one thread, under a limit of 2/s."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_WORKER_CONCURRENCY = 1
    settings.MAILQUEUE_RATE_LIMITS = "capture=2/s"


@pytest.mark.django_db(transaction=True)
def test_a_limited_email_waits_in_its_place_without_using_an_attempt(limited, send, work):
    """Six emails at 2/s: they leave 0.5 s apart, in the order they were accepted, each with
    its one attempt; the waits are counted per limit."""
    emails = [send(to=f"user{n}@example.com") for n in range(6)]

    work()

    rows = EmailJob.objects.filter(pk__in=[e.pk for e in emails])
    assert set(rows.values_list("status", flat=True)) == {EmailStatus.SENT}
    assert set(rows.values_list("attempts", flat=True)) == {1}
    assert DeliveryAttempt.objects.filter(email__in=emails).count() == 6
    started = dict(
        DeliveryAttempt.objects.values_list("email_id").annotate(first=Min("started_at"))
    )
    order = sorted(started, key=started.get)
    assert order == [e.pk for e in emails]
    spacing = (started[order[-1]] - started[order[0]]).total_seconds()
    assert spacing >= 5 * 0.5 - 0.05
    assert counters_read()[("email_rate_limited_total", ("capture",))] >= 4


@pytest.mark.django_db(transaction=True)
def test_a_long_wait_is_written_like_a_cooldown_without_an_attempt(limited, settings, send, work):
    """1/min: the second email waits a minute, `retrying` with no attempt used, and a
    `deferred` event names the limit and the time."""
    settings.MAILQUEUE_RATE_LIMITS = "capture=1/min"
    first, second = send(to="a@example.com"), send(to="b@example.com")

    work()

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == EmailStatus.SENT
    assert second.status == EmailStatus.RETRYING
    assert second.attempts == 0
    assert not second.delivery_attempts.exists()
    assert second.error_class == "rate_limited"
    assert 55 < (second.next_attempt_at - first.sent_at).total_seconds() <= 61
    event = second.events.get(event_type=EventType.DEFERRED)
    assert "capture=1/min:1" in event.description
    assert event.data["rate_limit"] == "capture"


@pytest.mark.django_db(transaction=True)
def test_a_provider_failed_over_to_takes_a_slot_of_its_own_limit(settings, send, work):
    """The first provider is down (SMTP on a closed port); the one failed over to is under
    `capture=1/min` whose slot is already taken: it is passed over (no call beyond its limit),
    the email retries, and its attempt names the route. Without the limit it would be sent."""
    settings.EMAIL_PROVIDERS = ["smtp", "capture"]
    settings.MAILQUEUE_SMTP = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": DOWN_PORT}
    settings.MAILQUEUE_SMTP_TIMEOUT = 1
    settings.MAILQUEUE_RATE_LIMITS = "capture=1/min"
    assert rate_limits_acquire(provider="capture", recipients=(), priority="default").booked
    email = send(to="ada@example.com")

    work()

    email.refresh_from_db()
    assert email.status == EmailStatus.RETRYING
    assert list(email.delivery_attempts.values_list("provider", flat=True)) == ["smtp"]
    assert not CapturedMessage.objects.exists()
    assert counters_read()[("email_rate_limited_total", ("capture",))] >= 1

    settings.MAILQUEUE_RATE_LIMITS = ""
    later = send(to="bob@example.com")
    work()
    later.refresh_from_db()
    assert (later.status, later.provider) == (EmailStatus.SENT, "capture")


# --- API throttling --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_api_throttle_is_shared_between_processes(api, issued_key, settings):
    """Another process's requests count against the same key: after it used the key's two
    requests a minute, this process gets 429 with Retry-After."""
    settings.MAILQUEUE_API_THROTTLE_RATE = "2/min"
    other_process = (
        "from types import SimpleNamespace;"
        "from mailqueue.models import ApiKey;"
        "from mailqueue.throttling import ApiKeyRateThrottle;"
        f"request = SimpleNamespace(auth=ApiKey.objects.get(pk={issued_key.api_key.pk!r}));"
        "print([ApiKeyRateThrottle().allow_request(request, None) for _ in range(2)])"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", other_process],
        cwd=PROJECT_DIR,
        env=live_env(MAILQUEUE_API_THROTTLE_RATE="2/min"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip().splitlines()[-1] == "[True, True]", result.stdout + result.stderr

    response = api.get("/api/v1/emails/")

    assert response.status_code == 429
    assert 25 <= int(response["Retry-After"]) <= 30


@pytest.mark.parametrize("rate", ["lots", "10", "0/s", "10/fortnight"])
def test_a_malformed_throttle_rate_is_refused_at_startup(settings, rate):
    """A rate DRF cannot read stops `manage.py check` instead of failing every request."""
    settings.MAILQUEUE_API_THROTTLE_RATE = rate

    with pytest.raises(ImproperlyConfigured, match="MAILQUEUE_API_THROTTLE_RATE"):
        conf.api_throttle_rate()


@pytest.mark.django_db
def test_the_api_throttle_lets_requests_through_when_redis_is_down(
    api, settings, caplog, monkeypatch
):
    """Redis down: requests are not throttled (and not failed); one warning."""
    from mailqueue import throttling

    monkeypatch.setattr(throttling, "_skip_until", 0.0)
    settings.MAILQUEUE_API_THROTTLE_RATE = "1/min"
    settings.RQ_QUEUES = DOWN_REDIS

    with caplog.at_level(logging.WARNING, logger="mailqueue.throttling"):
        statuses = [api.get("/api/v1/emails/").status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert sum("Redis unavailable" in r.getMessage() for r in caplog.records) == 1


# --- Real worker processes -------------------------------------------------------------------


def test_worker_processes_share_the_limit():
    """4 `rqworker` processes, 5/s with a burst of 2, 30 emails (private PostgreSQL and Redis):
    no 1-second window carries more than limit + burst, every email arrives, and the limit is
    used."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.rate_limits",
            "--workers=4",
            "--rate=5",
            "--burst=2",
            "--emails=30",
            "--no-mixed",
            "--json",
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])

    assert measured["sent"] == 30
    # Handed to the provider (what the limit governs); arrival adds the SMTP conversation.
    assert measured["handed_max_per_second"] <= 5 + 2, measured["handed_histogram"]
    assert measured["utilisation"] >= 0.9, measured
