"""Shared rate limits under real load: N worker processes, one limit, every email timed.

    .venv/bin/python -m bench.rate_limits                      # 8 workers, smtp=10/s:10, 1000
    .venv/bin/python -m bench.rate_limits --workers 4 --rate 5 --burst 5 --emails 40 --no-mixed

Starts a private PostgreSQL and Redis (chaos/services.py), migrates, then real
`manage.py rqworker high default low` processes sending to an SMTP sink in this process, with
MAILQUEUE_RATE_LIMITS="smtp=<rate>/s:<burst>". The sink notes the arrival time of each message:

- the per-second histogram of arrivals (from the first one);
- the most arrivals in any 1-second sliding window, against rate + burst;
- utilisation: the emails after the first burst / (rate x seconds from first to last arrival).

The mixed run then queues a `low` flood and, once it flows at the limit, a few `high` emails
one at a time, and prints how long each `high` email waited (creation to arrival).
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"


@dataclass
class Sink:
    """An SMTP server noting when each message arrives (unix time) and for whom."""

    arrivals: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope) -> str:
        """Note the arrival, accept the message."""
        with self.lock:
            self.arrivals.append((time.time(), envelope.rcpt_tos[0]))
        return "250 OK"


@dataclass
class Servers:
    """What the workers need: the private servers' URLs and the sink's port."""

    database_url: str
    redis_url: str
    smtp_port: int
    log_dir: Path


def worker_env(servers: Servers, limits: str) -> dict[str, str]:
    """Environment of the worker processes (and of this one, to create the emails)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MAILQUEUE_", "EMAIL_"))}
    return {
        **keep,
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "SECRET_KEY": "bench",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "EMAIL_PROVIDERS": "smtp",
        "EMAIL_URL": f"smtp://127.0.0.1:{servers.smtp_port}",
        "DEFAULT_FROM_EMAIL": "Bench <bench@example.com>",
        "MAILQUEUE_RATE_LIMITS": limits,
        "MAILQUEUE_SENDER_DOMAINS_REQUIRED": "0",
    }


def start_workers(number: int, env: dict[str, str], log_dir: Path) -> list[subprocess.Popen]:
    """Real `rqworker` processes (not burst: they wait for work like production ones)."""
    processes = []
    for index in range(number):
        with (log_dir / f"worker-{index}.log").open("ab") as log:
            processes.append(
                subprocess.Popen(
                    [str(PYTHON), "manage.py", "rqworker", "high", "default", "low"],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return processes


def stop_workers(processes: list[subprocess.Popen]) -> None:
    """Warm shutdown, then kill what is left."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_workers(number: int, timeout: float = 60) -> None:
    """Until every worker registered itself in Redis."""
    from mailqueue.scheduling import connection

    deadline = time.monotonic() + timeout
    while len(connection().smembers("rq:workers")) < number:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {number} workers registered after {timeout:.0f} s")
        time.sleep(0.1)


def histogram(times: list[float]) -> list[int]:
    """Arrivals per second from the first one."""
    if not times:
        return []
    start = min(times)
    counts = Counter(int(t - start) for t in times)
    return [counts.get(second, 0) for second in range(max(counts) + 1)]


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most arrivals in any window of `window` seconds (sliding, starting at an arrival)."""
    ordered = sorted(times)
    best, first = 0, 0
    for last, moment in enumerate(ordered):
        while moment - ordered[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


@dataclass
class RunResult:
    """One measured run."""

    sent: int
    seconds: float
    histogram: list[int]
    max_per_second: int
    utilisation: float
    # Most places an email arrived behind where it was queued (0: strictly in order).
    out_of_order: int = 0
    # The same figures at the moment each email was handed to the provider (the attempt's
    # start, which the limit governs; arrival adds the SMTP conversation and any stall of it).
    handed_histogram: list[int] = field(default_factory=list)
    handed_max_per_second: int = 0
    handed_out_of_order: int = 0
    high_waits: list[float] = field(default_factory=list)


def _create(count: int, *, priority: str, first: int, client) -> list:
    from mailqueue.services import BatchRecipient, batch_create

    recipients = [
        BatchRecipient(to=[f"user{n}@example.com"], context={}, metadata={})
        for n in range(first, first + count)
    ]
    return batch_create(
        client=client, recipients=recipients, subject="Hi", text="Hello", priority=priority
    )


def run_flood(
    *, sink: Sink, client, emails: int, rate: float, burst: int, timeout: float
) -> RunResult:
    """Queue `emails` default-priority emails at once; time their arrivals at the sink."""
    sink.arrivals.clear()
    _create(emails, priority="default", first=0, client=client)
    deadline = time.monotonic() + timeout
    while len(sink.arrivals) < emails and time.monotonic() < deadline:
        time.sleep(0.1)
    times = [moment for moment, _ in sink.arrivals]
    seconds = max(times) - min(times) if times else 0.0
    paced = max(0, len(times) - burst)
    handed = handed_to_provider()
    return RunResult(
        sent=len(times),
        seconds=seconds,
        histogram=histogram(times),
        max_per_second=max_in_window(times),
        utilisation=paced / (rate * seconds) if seconds else 0.0,
        out_of_order=out_of_order(sink.arrivals),
        handed_histogram=histogram([moment for moment, _ in handed]),
        handed_max_per_second=max_in_window([moment for moment, _ in handed]),
        handed_out_of_order=out_of_order(handed),
    )


def handed_to_provider() -> list[tuple[float, str]]:
    """When each sent email was handed to the provider (its attempt's start), and to whom."""
    from mailqueue.models import DeliveryAttempt

    rows = DeliveryAttempt.objects.filter(outcome=DeliveryAttempt.Outcome.SENT).values_list(
        "started_at", "email__to"
    )
    return [(started.timestamp(), to[0]) for started, to in rows]


def out_of_order(arrivals: list[tuple[float, str]]) -> int:
    """Most places any email arrived after its place in the queue (`user<n>@` is the n-th)."""
    ordered = sorted(arrivals)
    numbers = [int(to.split("@")[0].removeprefix("user")) for _, to in ordered]
    place = {number: index for index, number in enumerate(sorted(numbers))}
    return max((index - place[number] for index, number in enumerate(numbers)), default=0)


def run_mixed(*, sink: Sink, client, low: int, high: int, rate: float, timeout: float) -> RunResult:
    """A `low` flood, then `high` emails one at a time once it flows: their waits."""
    from mailqueue.services import email_create

    sink.arrivals.clear()
    _create(low, priority="low", first=100_000, client=client)
    while len(sink.arrivals) < 3 * rate:  # the flood has used its burst and flows at the limit
        time.sleep(0.05)
    created: dict[str, float] = {}
    for number in range(high):
        address = f"high{number}@example.com"
        created[address] = time.time()
        email_create(client=client, to=[address], subject="Urgent", text="Now", priority="high")
        time.sleep(1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arrived = {to: moment for moment, to in sink.arrivals if to in created}
        if len(arrived) == high:
            break
        time.sleep(0.05)
    times = [moment for moment, _ in sink.arrivals]
    return RunResult(
        sent=len(times),
        seconds=max(times) - min(times) if times else 0.0,
        histogram=histogram(times),
        max_per_second=max_in_window(times),
        utilisation=0.0,
        high_waits=[arrived[to] - created[to] for to in created if to in arrived],
    )


def measure(
    *, workers: int, rate: float, burst: int, emails: int, mixed: bool, log_dir: Path
) -> tuple[RunResult, RunResult | None]:
    """Start everything, run the flood (and the mixed run), stop everything."""
    from aiosmtpd.controller import Controller

    sys.path.insert(0, str(ROOT))
    from chaos.services import free_port, private_postgres, private_redis

    log_dir.mkdir(parents=True, exist_ok=True)
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with private_postgres() as postgres, private_redis() as redis_server:
            servers = Servers(
                database_url=postgres.create_database("mailqueue"),
                redis_url=redis_server.url,
                smtp_port=port,
                log_dir=log_dir,
            )
            env = worker_env(servers, f"smtp={rate:g}/s:{burst}")
            started = time.monotonic()
            subprocess.run(
                [str(PYTHON), "manage.py", "migrate", "--no-input", "-v", "0"],
                cwd=ROOT,
                env=env,
                check=True,
            )
            print(f"migrated in {time.monotonic() - started:.1f} s", flush=True)
            os.environ.update(env)
            import django

            django.setup()
            from mailqueue.services import api_key_create

            client = api_key_create(client_name="bench", scopes=["send"]).api_key.client
            processes = start_workers(workers, env, log_dir)
            try:
                started = time.monotonic()
                wait_for_workers(workers)
                print(f"workers up in {time.monotonic() - started:.1f} s", flush=True)
                flood = run_flood(
                    sink=sink,
                    client=client,
                    emails=emails,
                    rate=rate,
                    burst=burst,
                    timeout=emails / rate * 2 + 30,
                )
                mixed_result = None
                if mixed:
                    # Let the buckets fill up again: the mixed run starts from rest as well.
                    time.sleep(burst / rate + 1)
                    mixed_result = run_mixed(
                        sink=sink,
                        client=client,
                        low=int(rate * 20),
                        high=5,
                        rate=rate,
                        timeout=60,
                    )
            finally:
                stop_workers(processes)
                from django.db import connections

                connections.close_all()
    finally:
        controller.stop()
    return flood, mixed_result


def report(result: RunResult, *, rate: float, burst: int, emails: int) -> None:
    """Print one flood run."""
    print(f"per-second histogram: {result.histogram}")
    print(
        f"sent {result.sent}/{emails} in {result.seconds:.1f} s; most in any 1-s window: "
        f"{result.max_per_second} (limit + burst = {rate + burst:g}); "
        f"utilisation {result.utilisation:.1%} (emails after the burst / rate x duration); "
        f"most places an email arrived behind its place in the queue: {result.out_of_order}"
    )
    print(f"handed to the provider, per second: {result.handed_histogram}")
    print(
        f"handed to the provider: most in any 1-s window {result.handed_max_per_second}; "
        f"most places behind its place in the queue: {result.handed_out_of_order}"
    )


def main() -> None:
    """Parse the options, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rate", type=float, default=10.0, help="emails per second")
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--emails", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-mixed", dest="mixed", action="store_false")
    parser.add_argument("--json", action="store_true", help="end with the flood's figures as JSON")
    parser.add_argument(
        "--log-dir", type=Path, default=Path(tempfile.gettempdir()) / "mailqueue-bench-rate-limits"
    )
    args = parser.parse_args()
    if args.runs > 1:
        runs_summary(args)
        return
    print(f"--- {args.workers} workers, smtp={args.rate:g}/s:{args.burst}, {args.emails} emails")
    flood, mixed = measure(
        workers=args.workers,
        rate=args.rate,
        burst=args.burst,
        emails=args.emails,
        mixed=args.mixed,
        log_dir=args.log_dir,
    )
    report(flood, rate=args.rate, burst=args.burst, emails=args.emails)
    if mixed is not None:
        print(f"mixed: low flood histogram {mixed.histogram}")
        print(f"mixed: most in any 1-s window {mixed.max_per_second}")
        waits = ", ".join(f"{wait:.2f}" for wait in mixed.high_waits)
        print(f"mixed: high emails' waits (s): {waits}")
    if args.json:
        figures = dataclasses.asdict(flood)
        figures["high_waits"] = mixed.high_waits if mixed is not None else []
        print(json.dumps(figures), flush=True)


def runs_summary(args: argparse.Namespace) -> None:
    """Several runs, each in a fresh process (Django is set up once per process, for its own
    servers), then min/median/max of their figures."""
    runs = []
    for run in range(args.runs):
        print(f"=== run {run + 1}/{args.runs}", flush=True)
        command = [str(PYTHON), "-m", "bench.rate_limits", "--runs=1", "--json"]
        command += [f"--workers={args.workers}", f"--rate={args.rate}"]
        command += [f"--burst={args.burst}", f"--emails={args.emails}"]
        command += [] if args.mixed else ["--no-mixed"]
        output = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
        lines = output.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)
        runs.append(json.loads(lines[-1]))

    def spread(values: list[float], unit: str = "") -> str:
        return (
            f"min {min(values):.3g}{unit}, median {statistics.median(values):.3g}{unit}, "
            f"max {max(values):.3g}{unit}"
        )

    print(f"=== {args.runs} runs")
    print(f"most in any 1-s window (limit + burst = {args.rate + args.burst:g}): "
          + spread([r["max_per_second"] for r in runs]))  # fmt: skip
    print("utilisation: " + spread([100 * r["utilisation"] for r in runs], "%"))
    print("seconds for all emails: " + spread([r["seconds"] for r in runs], " s"))
    print("places behind in the queue: " + spread([r["out_of_order"] for r in runs]))
    print(
        "handed to the provider: most in any 1-s window "
        + spread([r["handed_max_per_second"] for r in runs])
        + "; places behind in the queue "
        + spread([r["handed_out_of_order"] for r in runs])
    )
    waits = [wait for r in runs for wait in r["high_waits"]]
    if waits:
        print("high emails' wait behind a low flood: " + spread(waits, " s"))


if __name__ == "__main__":
    main()
