"""Circuit breaker scenario: the primary provider answers 503 for a minute under a steady load.

EMAIL_PROVIDERS=postmark,smtp: `postmark` is anymail's real Postmark backend pointed at a local
fake of Postmark's API (chaos/fake_esp.py: the HTTP boundary is the only thing faked), `smtp` a
local SMTP server. Four real worker processes (`manage.py rqworker high default low`) and a
scheduler run on a private PostgreSQL and Redis (chaos/services.py) while this process creates
emails at a steady rate. The fake ESP answers 200, then 503 for `--outage` seconds, then 200.

Printed, and checked: the calls that reached the primary while its circuit was open (a
handful at most: sends already under way in other workers before they learnt of it), the
half-open probes, the emails each provider carried before, during and after the outage, lost
emails (never accepted by either server: must be 0), duplicates (a Message-ID accepted twice
across both: must be 0) and how long after the recovery mail went back to the primary.

    .venv/bin/python -m chaos.breaker_failover                      # the full minute
    .venv/bin/python -m chaos.breaker_failover --outage 5 --cooldown 1 --before 2 --after 4
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from chaos.fake_esp import Call, FakePostmark, RecordingSmtp
from chaos.services import private_postgres, private_redis

ROOT = Path(__file__).resolve().parent.parent
PRIMARY, SECONDARY = "postmark", "smtp"
BREAKER_KEY = f"mailqueue:breaker:{PRIMARY}"
# Most calls allowed to reach the primary while its circuit is open: the sends each worker had
# under way, or started before its next look at the shared state (at most a second).
HANDFUL = 10
_FOREIGN_PREFIXES = ("ANYMAIL_", "MAILQUEUE_", "EMAIL_", "DATABASE_", "REDIS_", "DJANGO_")


@dataclass(frozen=True)
class Scenario:
    """What one run does."""

    rate: float = 20.0  # emails created per second, all along
    before: float = 10.0  # seconds of normal service before the outage
    outage: float = 60.0  # seconds the primary answers 503
    after: float = 30.0  # seconds of load after it recovers
    workers: int = 4
    concurrency: int = 8  # MAILQUEUE_WORKER_CONCURRENCY
    cooldown: float = 30.0  # MAILQUEUE_PROVIDER_COOLDOWN_SECONDS: how long the circuit stays open
    failures: int = 5  # MAILQUEUE_BREAKER_FAILURES
    window: float = 30.0  # MAILQUEUE_BREAKER_WINDOW_SECONDS
    drain_timeout: float = 60.0  # seconds to wait for the last emails after the load stops


@dataclass
class Report:
    """The run's figures and whether they meet the scenario's promises."""

    scenario: Scenario
    emails: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    carried: dict[str, dict[str, int]] = field(default_factory=dict)
    primary_calls: dict[str, int] = field(default_factory=dict)
    calls_while_open: int = 0
    probes: int = 0
    openings: int = 0
    lost: int = 0
    duplicated: int = 0
    back_to_primary_seconds: float | None = None
    circuit_closed_after_seconds: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every promise held."""
        return not self.problems


def _env(*, database_url: str, redis_url: str, esp_url: str, smtp_port: int, s: Scenario) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY="chaos-breaker",
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        EMAIL_PROVIDERS=f"{PRIMARY},{SECONDARY}",
        EMAIL_URL=f"smtp://127.0.0.1:{smtp_port}",
        EMAIL_TIMEOUT="10",
        ANYMAIL_POSTMARK_SERVER_TOKEN="chaos-token",
        ANYMAIL_POSTMARK_API_URL=esp_url,
        DEFAULT_FROM_EMAIL="Breaker <breaker@example.com>",
        MAILQUEUE_PUBLIC_URL="http://127.0.0.1",
        MAILQUEUE_WORKER_CONCURRENCY=str(s.concurrency),
        MAILQUEUE_PROVIDER_COOLDOWN_SECONDS=str(s.cooldown),
        MAILQUEUE_BREAKER_FAILURES=str(s.failures),
        MAILQUEUE_BREAKER_WINDOW_SECONDS=str(s.window),
        MAILQUEUE_RETRY_BASE_SECONDS="1",
        MAILQUEUE_RETRY_MAX_SECONDS="4",
        MAILQUEUE_MAX_ATTEMPTS="10",
        MAILQUEUE_SWEEP_INTERVAL_SECONDS="2",
    )
    return env


class CircuitWatch:
    """Follows the primary's circuit in Redis every 20 ms: each opening's (opened_at, until) and
    the moments it was seen closed again (Redis's clock, the same host's as the servers')."""

    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url)
        self.openings: dict[float, float] = {}
        self.closed_at: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        was_open = False
        while not self._stop.is_set():
            opened_at, until = self.redis.hmget(BREAKER_KEY, "opened_at", "until")
            if opened_at is not None:
                self.openings[float(opened_at) / 1000] = float(until) / 1000
                was_open = True
            elif was_open:
                self.closed_at.append(time.time())
                was_open = False
            self._stop.wait(0.02)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join()

    def state_at(self, moment: float) -> str:
        """`open`, `half_open` or `closed` at a moment, from the openings seen."""
        starts = sorted(self.openings)
        for index, opened_at in enumerate(starts):
            following = starts[index + 1] if index + 1 < len(starts) else float("inf")
            closes = min((c for c in self.closed_at if c > opened_at), default=float("inf"))
            if opened_at <= moment < self.openings[opened_at]:
                return "open"
            if self.openings[opened_at] <= moment < min(following, closes):
                return "half_open"
        return "closed"


def _start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(condition, *, timeout: float, what: str, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}"
                for log in sorted(logs.glob("*.log"))
            )
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.1)


def _phase(moment: float, *, failed_at: float, recovered_at: float) -> str:
    if moment < failed_at:
        return "before"
    return "during" if moment < recovered_at else "after"


def run(scenario: Scenario) -> Report:
    """Run the scenario on private servers and return its figures."""
    with (
        private_postgres() as postgres,
        private_redis() as private,
        tempfile.TemporaryDirectory(prefix="mailqueue-breaker-") as tmp,
    ):
        logs = Path(tmp)
        esp, smtp = FakePostmark(), RecordingSmtp()
        esp.start()
        smtp.start()
        env = _env(
            database_url=postgres.create_database("mailqueue"),
            redis_url=private.url,
            esp_url=esp.url,
            smtp_port=smtp.port,
            s=scenario,
        )
        # Workers start while the database is migrated (they touch it only for jobs, and none
        # is enqueued before this process creates emails); the scheduler sweeps at once, so it
        # starts after.
        migrate = _start(["migrate", "--no-input"], env, logs / "migrate.log")
        processes = [
            _start(["rqworker", "high", "default", "low"], env, logs / f"worker-{n}.log")
            for n in range(scenario.workers)
        ]
        # This process creates the emails, through the same service the API calls.
        os.environ.update(env)
        import django

        django.setup()
        if migrate.wait():
            _stop(processes)
            raise RuntimeError(f"migrate failed: {(logs / 'migrate.log').read_text()[-2000:]}")
        processes.append(_start(["rqscheduler"], env, logs / "scheduler.log"))
        watch = CircuitWatch(private.url)
        try:
            report = _drive(scenario, esp=esp, smtp=smtp, watch=watch, redis_url=private.url,
                            logs=logs)  # fmt: skip
        finally:
            watch.stop()
            _stop(processes)
            esp.stop()
            smtp.stop()
        return report


def _drive(
    scenario: Scenario,
    *,
    esp: FakePostmark,
    smtp: RecordingSmtp,
    watch: CircuitWatch,
    redis_url: str,
    logs: Path,
) -> Report:
    """The load and the outage, then the figures."""
    from mailqueue.models import Client, EmailJob, EmailStatus
    from mailqueue.services import email_create
    from mailqueue.services.delivery import smtp_message_id

    queues = redis.Redis.from_url(redis_url)
    _wait(
        lambda: queues.scard("rq:workers") >= scenario.workers,
        timeout=60,
        what="the workers to start",
        logs=logs,
    )
    client = Client.objects.create(name="breaker")
    watch.start()
    created: list = []
    total = scenario.before + scenario.outage + scenario.after
    stop_load = threading.Event()

    def load() -> None:
        began = time.monotonic()
        while not stop_load.is_set() and time.monotonic() - began < total:
            email = email_create(
                client=client,
                to=[f"user{len(created)}@example.com"],
                subject="Breaker",
                text="Hello",
            )
            created.append(email.pk)
            due = began + len(created) / scenario.rate
            stop_load.wait(max(0.0, due - time.monotonic()))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    time.sleep(scenario.before)
    esp.failing = True
    failed_at = time.time()
    time.sleep(scenario.outage)
    esp.failing = False
    recovered_at = time.time()
    loader.join(timeout=scenario.after + 30)
    stop_load.set()
    loader.join()

    final = {EmailStatus.SENT, EmailStatus.FAILED}
    _wait(
        lambda: not EmailJob.objects.exclude(status__in=final).exists(),
        timeout=scenario.drain_timeout,
        what="every email to be sent",
        logs=logs,
    )
    time.sleep(0.5)  # the last outcomes' sends have reached the servers long before
    return _figures(
        scenario,
        created=created,
        esp_calls=esp.snapshot(),
        smtp_calls=smtp.snapshot(),
        watch=watch,
        failed_at=failed_at,
        recovered_at=recovered_at,
        statuses=Counter(EmailJob.objects.values_list("status", flat=True)),
        message_id=smtp_message_id,
    )


def _figures(
    scenario: Scenario,
    *,
    created: list,
    esp_calls: list[Call],
    smtp_calls: list[Call],
    watch: CircuitWatch,
    failed_at: float,
    recovered_at: float,
    statuses: Counter,
    message_id,
) -> Report:
    report = Report(scenario=scenario, emails=len(created), statuses=dict(statuses))
    accepted = [(PRIMARY, c) for c in esp_calls if c.status == 200]
    accepted += [(SECONDARY, c) for c in smtp_calls]
    report.carried = {phase: {PRIMARY: 0, SECONDARY: 0} for phase in ("before", "during", "after")}
    for provider, call in accepted:
        phase = _phase(call.at, failed_at=failed_at, recovered_at=recovered_at)
        report.carried[phase][provider] += 1
    states = Counter(watch.state_at(call.at) for call in esp_calls)
    report.primary_calls = dict(states)
    report.calls_while_open = states.get("open", 0)
    report.probes = states.get("half_open", 0)
    report.openings = len(watch.openings)
    seen = Counter(call.message_id for _, call in accepted)
    wanted = {message_id(pk) for pk in created}
    report.lost = len(wanted - seen.keys())
    report.duplicated = sum(1 for count in seen.values() if count > 1)
    back = [c.at for c in esp_calls if c.status == 200 and c.at >= recovered_at]
    if back:
        report.back_to_primary_seconds = round(min(back) - recovered_at, 2)
    closed = [moment for moment in watch.closed_at if moment >= recovered_at]
    if closed:
        report.circuit_closed_after_seconds = round(min(closed) - recovered_at, 2)

    problems = report.problems
    if report.lost:
        problems.append(f"{report.lost} email(s) lost")
    if report.duplicated:
        problems.append(f"{report.duplicated} email(s) delivered twice")
    if report.calls_while_open > HANDFUL:
        problems.append(f"{report.calls_while_open} calls reached the primary while open")
    if not report.openings:
        problems.append("the circuit never opened")
    if not report.carried["during"][SECONDARY]:
        problems.append("the secondary carried nothing during the outage")
    if report.back_to_primary_seconds is None:
        problems.append("mail never went back to the primary")
    elif report.back_to_primary_seconds > scenario.cooldown + 5:
        problems.append(f"mail went back to the primary {report.back_to_primary_seconds} s late")
    if set(statuses) - {"sent"}:
        problems.append(f"not every email was sent: {dict(statuses)}")
    return report


def summary(report: Report) -> str:
    """The figures, for a person."""
    s = report.scenario
    lines = [
        f"Circuit breaker failover: {report.emails} emails at {s.rate:g}/s, primary 503 for "
        f"{s.outage:g} s ({s.workers} workers x {s.concurrency} threads; breaker "
        f"{s.failures} failures in {s.window:g} s, open {s.cooldown:g} s)",
        "  carried (primary/secondary): "
        + ", ".join(f"{phase} {c[PRIMARY]}/{c[SECONDARY]}" for phase, c in report.carried.items()),
        f"  calls to the primary: {report.primary_calls} "
        f"(while open: {report.calls_while_open}; half-open probes: {report.probes}; "
        f"circuit opened {report.openings} time(s))",
        f"  lost: {report.lost}, duplicated: {report.duplicated}, statuses: {report.statuses}",
        f"  back to the primary {report.back_to_primary_seconds} s after recovery "
        f"(circuit closed after {report.circuit_closed_after_seconds} s)",
        "  OK" if report.ok else "  PROBLEMS: " + "; ".join(report.problems),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the scenario from the command line; exit status 1 if a promise was broken."""
    defaults = Scenario()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=defaults.rate, help="emails per second")
    parser.add_argument("--before", type=float, default=defaults.before)
    parser.add_argument("--outage", type=float, default=defaults.outage, help="seconds of 503")
    parser.add_argument("--after", type=float, default=defaults.after)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--cooldown", type=float, default=defaults.cooldown)
    parser.add_argument("--failures", type=int, default=defaults.failures)
    parser.add_argument("--window", type=float, default=defaults.window)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    scenario = Scenario(
        rate=args.rate,
        before=args.before,
        outage=args.outage,
        after=args.after,
        workers=args.workers,
        concurrency=args.concurrency,
        cooldown=args.cooldown,
        failures=args.failures,
        window=args.window,
    )
    report = run(scenario)
    print(summary(report))
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
