"""The measures of `make bench`, one function each; every one records Mailqueue and its peer.

Each function starts from empty scratch databases, does the same work with every contestant
(in alternating order from round to round, so a drift of the machine does not favour one) and
records the numbers in the run's Recorder.
"""

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import mailqueue_driver as mq
from bench.lib import procs
from bench.lib.http_load import LoadResult, run_load
from bench.lib.report import MAILQUEUE, Metric, Recorder, percentile
from bench.peers import bare_drf_peer, post_office_peer, wire

PO = "post_office"
BARE = "bare DRF"
WIRE = "smtplib, 1 connection"
SEND_MANY = "post_office send_many"

METRICS = [
    Metric("batch_1w", "1. batch emails, 1 worker | 1 process", "emails/s", PO),
    Metric("batch_1w_cpu", "1. (per CPU-second of the sender)", "emails/cpu-s", PO),
    Metric("batch_1w_db", "1. (PostgreSQL CPU per email)", "cpu-ms", PO, False),
    Metric("batch_1w_sink", "1. (SMTP sink CPU per email)", "cpu-ms", PO, False),
    Metric("enqueue_batch", "1. (queueing them: 1000 a call)", "emails/s", PO),
    Metric("single_1w", "2. single emails, 1 worker | 1 process", "emails/s", PO),
    Metric("single_1w_cpu", "2. (per CPU-second of the sender)", "emails/cpu-s", PO),
    Metric("single_1w_db", "2. (PostgreSQL CPU per email)", "cpu-ms", PO, False),
    Metric("single_1w_sink", "2. (SMTP sink CPU per email)", "cpu-ms", PO, False),
    Metric("enqueue_single", "2. (queueing them: 1 a call)", "emails/s", PO),
    Metric("batch_2w", "3. batch emails, 2 workers | 2 processes", "emails/s", PO),
    Metric("single_2w", "3. single emails, 2 workers | 2 processes", "emails/s", PO),
    Metric("wire", "4. batch, 1 worker vs raw smtplib", "emails/s", WIRE),
    Metric("http_email_rps", "5. POST /emails/ (gunicorn -w 2, 4 clients)", "req/s", BARE),
    Metric("http_email_p50", "5. POST /emails/ latency p50", "ms", BARE, higher_is_better=False),
    Metric("http_email_p99", "5. POST /emails/ latency p99", "ms", BARE, higher_is_better=False),
    Metric("http_email_cpu", "5. POST /emails/ server CPU per request", "cpu-ms", BARE, False),
    Metric("http_batch", "6. POST /batches/ (100 recipients each)", "emails/s", SEND_MANY),
    Metric("enqueue_100", "6. batch_create vs send_many, 100 a call", "emails/s", SEND_MANY),
    Metric("priority_seconds", "7. priority: worker start -> high sent", "s", None, False),
    Metric("priority_overtaken", "7. priority: low emails sent before it", "emails", None, False),
    Metric("soak_rate", "8. soak: delivery rate, 1 worker (steady)", "emails/s"),
    Metric("soak_rss_warm", "8. soak: RSS after warm-up (5%)", "MiB", None, False),
    Metric("soak_rss_end", "8. soak: RSS at the end", "MiB", None, False),
    Metric("soak_rss_max", "8. soak: RSS max", "MiB", None, False),
    Metric("soak_growth", "8. soak: RSS growth, warm-up -> end", "%", None, False),
]


@dataclass(frozen=True)
class Plan:
    """How much work each measure does (full or quick)."""

    rounds: int
    batch: int
    single: int
    wire: int
    http_seconds: float
    http_warmup: float
    send_many: int
    priority_low: int
    soak: int
    clients: int = 4
    web_workers: int = 2
    batch_request_size: int = 100

    @classmethod
    def full(cls) -> "Plan":
        """Three rounds at the sizes of the issue."""
        return cls(
            rounds=3,
            batch=2000,
            single=1000,
            wire=2000,
            http_seconds=10,
            http_warmup=1.5,
            send_many=2000,
            priority_low=10_000,
            soak=100_000,
        )

    @classmethod
    def quick(cls) -> "Plan":
        """One short round with smaller counts, to check that everything works."""
        return cls(
            rounds=1,
            batch=1000,
            single=200,
            wire=1000,
            http_seconds=3,
            http_warmup=1,
            send_many=500,
            priority_low=1000,
            soak=10_000,
        )


@dataclass
class Run:
    """State shared by the measures of one benchmark run."""

    plan: Plan
    recorder: Recorder
    smtp_port: int
    sink: subprocess.Popen
    logs: Path
    round_no: int = 0
    say: Callable[[str], None] = print
    sink_shares: dict[str, list[float]] = field(default_factory=dict)
    measure_seconds: dict[str, list[float]] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        """The log file of one kind of child process."""
        return self.logs / f"{name}.log"

    def record(self, key: str, contestant: str, value: float, **extra) -> None:
        """Record a sample and print it."""
        self.recorder.add(key, contestant, value, round_no=self.round_no, **extra)
        unit = next(m.unit for m in self.recorder.metrics if m.key == key)
        self.say(f"  {key:<18} {contestant:<22} {value:>10,.2f} {unit}")

    def attempt(self, what: str, action: Callable[[], None]) -> None:
        """Run one contestant's part of a measure; a failure is recorded and the run goes on."""
        try:
            action()
        # Any failure is reported with the numbers; the other measures still run.
        except Exception as exc:
            self.recorder.error(what, round_no=self.round_no, message=repr(exc))
            self.say(f"  {what}: FAILED: {exc!r}")

    def in_order(self, *parts: tuple[str, Callable[[], None]]) -> None:
        """Run the contestants' parts, in reverse order every other round."""
        ordered = parts if self.round_no % 2 else tuple(reversed(parts))
        for what, action in ordered:
            self.attempt(what, action)

    def record_cpu_split(self, key: str, contestant: str, result: dict, count: int) -> None:
        """Record what PostgreSQL and the SMTP sink spent per email of the measure just run."""
        label = f"{key} {contestant}"
        sink_seconds = self.sink_shares[label][-1] * result["seconds"]
        self.record(f"{key}_db", contestant, result["database_cpu_seconds"] / count * 1000)
        self.record(f"{key}_sink", contestant, sink_seconds / count * 1000)

    @contextmanager
    def sink_cpu(self, label: str) -> Iterator[None]:
        """Measure the share of one core the SMTP sink used during the block."""
        cpu, wall = procs.cpu_seconds(self.sink.pid), time.monotonic()
        yield
        share = (procs.cpu_seconds(self.sink.pid) - cpu) / (time.monotonic() - wall)
        self.sink_shares.setdefault(label, []).append(share)


def delivery(run: Run, *, mode: str, workers: int) -> None:
    """Measures 1-3: queue emails (batches or one by one), then time delivering all of them."""
    count = run.plan.batch if mode == "batch" else run.plan.single
    key = f"{mode}_{workers}w"

    def mailqueue() -> None:
        tenant = mq.reset()
        if mode == "batch":
            queued = mq.enqueue_batches(tenant, count=count, per_call=1000)
        else:
            queued, _ = mq.enqueue_singles(tenant, count=count)
        with run.sink_cpu(f"{key} {MAILQUEUE}"):
            result = mq.deliver(
                workers=workers, expected=count, smtp_port=run.smtp_port, log=run.log("rqworker")
            )
        rate = count / result["seconds"]
        run.record(key, MAILQUEUE, rate, count=count, **result)
        if workers == 1:
            run.record(f"{key}_cpu", MAILQUEUE, count / result["cpu_seconds"])
            run.record_cpu_split(key, MAILQUEUE, result, count)
            run.record(f"enqueue_{mode}", MAILQUEUE, count / queued, seconds=queued)
        if key == "batch_1w":
            run.record("wire", MAILQUEUE, rate, count=count, **result)

    def post_office() -> None:
        post_office_peer.reset()
        queued = post_office_peer.enqueue(
            mode=mode,
            count=count,
            per_call=1000,
            smtp_port=run.smtp_port,
            log=run.log("post_office"),
        )
        with run.sink_cpu(f"{key} {PO}"):
            result = post_office_peer.deliver(
                processes=workers,
                expected=count,
                smtp_port=run.smtp_port,
                log=run.log("post_office"),
            )
        run.record(key, PO, count / result["seconds"], count=count, **result)
        if workers == 1:
            run.record(f"{key}_cpu", PO, count / result["cpu_seconds"])
            run.record_cpu_split(key, PO, result, count)
            run.record(f"enqueue_{mode}", PO, count / queued, seconds=queued)

    run.in_order((f"{key} {MAILQUEUE}", mailqueue), (f"{key} {PO}", post_office))


def wire_peer(run: Run) -> None:
    """Measure 4: prebuilt messages over one smtplib connection to the same sink."""

    def smtplib_peer() -> None:
        messages = wire.build(run.plan.wire)
        with run.sink_cpu("wire smtplib"):
            seconds = wire.send(messages, port=run.smtp_port)
        share = run.sink_shares["wire smtplib"][-1]
        run.record("wire", WIRE, run.plan.wire / seconds, seconds=seconds, sink_cpu=share)

    run.attempt(f"wire {WIRE}", smtplib_peer)


def _emails_load(run: Run, contestant: str, result: LoadResult) -> None:
    """Record requests/s, p50/p99 latency and server CPU per request of POST /emails/."""
    if not result.ok:
        raise RuntimeError(f"no successful request: statuses {dict(result.statuses)}")
    extra = {"statuses": dict(result.statuses), "errors": result.errors, "ok": result.ok}
    run.record("http_email_rps", contestant, result.per_second, **extra)
    run.record("http_email_p50", contestant, percentile(result.latencies_ms, 50))
    run.record("http_email_p99", contestant, percentile(result.latencies_ms, 99))
    run.record(
        "http_email_cpu",
        contestant,
        result.cpu_ms_per_request,
        server_cpu_seconds=result.server_cpu_seconds,
    )


def http_api(run: Run) -> None:
    """Measures 5 and 6: the REST API under gunicorn -w 2 with 4 clients (no worker running)."""
    plan = run.plan
    size = plan.batch_request_size

    def load(
        web: subprocess.Popen, port: int, path: str, body: Callable[[int], dict], headers: dict
    ) -> LoadResult:
        return run_load(
            server_pid=web.pid,
            port=port,
            path=path,
            body=body,
            headers=headers,
            clients=plan.clients,
            seconds=plan.http_seconds,
            warmup=plan.http_warmup,
        )

    def mailqueue() -> None:
        tenant = mq.reset()
        headers = {"Authorization": f"Bearer {tenant.api_key}"}
        port = procs.free_port()
        web = mq.start_web(port=port, workers=plan.web_workers, log=run.log("gunicorn-mailqueue"))
        try:
            result = load(web, port, "/api/v1/emails/", mq.email_body, headers)
            _emails_load(run, MAILQUEUE, result)
            result = load(web, port, "/api/v1/batches/", lambda n: mq.batch_body(n, size), headers)
            if not result.ok:
                raise RuntimeError(f"no batch accepted: statuses {dict(result.statuses)}")
            run.record(
                "http_batch",
                MAILQUEUE,
                result.per_second * size,
                statuses=dict(result.statuses),
                p50_ms=percentile(result.latencies_ms, 50),
                p99_ms=percentile(result.latencies_ms, 99),
                server_cpu_ms_per_request=result.cpu_ms_per_request,
            )
        finally:
            procs.stop(web)

    def bare() -> None:
        bare_drf_peer.reset()
        port = procs.free_port()
        web = bare_drf_peer.start_web(
            port=port, workers=plan.web_workers, log=run.log("gunicorn-bare-drf")
        )
        try:
            _emails_load(run, BARE, load(web, port, "/api/v1/emails/", mq.email_body, {}))
        finally:
            procs.stop(web)

    def in_process_mailqueue() -> None:
        tenant = mq.reset()
        seconds = mq.enqueue_batches(tenant, count=plan.send_many, per_call=size)
        run.record("enqueue_100", MAILQUEUE, plan.send_many / seconds, seconds=seconds)

    def send_many() -> None:
        post_office_peer.reset()
        seconds = post_office_peer.enqueue(
            mode="batch",
            count=plan.send_many,
            per_call=size,
            smtp_port=run.smtp_port,
            log=run.log("post_office"),
        )
        for key in ("http_batch", "enqueue_100"):
            run.record(key, SEND_MANY, plan.send_many / seconds, seconds=seconds)

    run.in_order((f"http {MAILQUEUE}", mailqueue), (f"http {BARE}", bare))
    run.in_order(
        (f"enqueue_100 {MAILQUEUE}", in_process_mailqueue), (f"enqueue_100 {PO}", send_many)
    )


def priority(run: Run) -> None:
    """Measure 7: one high email queued behind many low ones leaves first."""

    def mailqueue() -> None:
        from django.utils import timezone

        from mailqueue.models import EmailJob

        tenant = mq.reset()
        low = run.plan.priority_low
        mq.enqueue_batches(tenant, count=low, per_call=1000, priority="low")
        _, high = mq.enqueue_singles(tenant, count=1, priority="high", first=low)
        started = timezone.now()
        workers = mq.start_workers(1, smtp_port=run.smtp_port, log=run.log("rqworker"))
        try:
            procs.wait_until(
                lambda: EmailJob.objects.filter(pk=high.pk, sent_at__isnull=False).exists(),
                timeout=120,
                interval=0.02,
                processes=workers,
                what="the high email sent",
            )
        finally:
            procs.stop(workers[0])
        sent_at = EmailJob.objects.get(pk=high.pk).sent_at
        overtaken = EmailJob.objects.filter(priority="low", sent_at__lt=sent_at).count()
        run.record("priority_seconds", MAILQUEUE, (sent_at - started).total_seconds(), low=low)
        run.record("priority_overtaken", MAILQUEUE, overtaken, low=low)

    run.attempt(f"priority {MAILQUEUE}", mailqueue)


def soak(run: Run) -> None:
    """Measure 8: one worker sends many emails; its RSS is sampled every second.

    To keep `make bench` short, a tenth of the emails is queued before the worker starts and
    the rest while it works (queueing is several times faster than sending, so it never runs
    dry). The delivery rate is taken over the part after queueing has finished, when the
    worker has the machine to itself.
    """

    def mailqueue() -> None:
        count, per_call = run.plan.soak, 1000
        tenant = mq.reset()
        queued = max(per_call, count // 10)
        mq.enqueue_batches(tenant, count=queued, per_call=per_call)
        run.say(f"  soak: one worker sends {count:,} emails ({count - queued:,} queued meanwhile)")
        started = time.monotonic()
        worker = mq.start_workers(1, smtp_port=run.smtp_port, log=run.log("rqworker"))[0]
        samples: list[tuple[float, int, int]] = []  # (seconds, final emails, RSS KiB)
        queueing_done: tuple[float, int] | None = None

        def sample() -> int:
            rss, final = procs.rss_kb(worker.pid), mq.count_final()
            if rss:
                samples.append((time.monotonic() - started, final, rss))
            return final

        try:
            while queued < count:
                size = min(per_call, count - queued)
                mq.enqueue_batches(tenant, count=size, per_call=per_call, first=queued)
                queued += size
                if not samples or time.monotonic() - started - samples[-1][0] >= 1:
                    sample()
            queueing_done = (time.monotonic() - started, sample())
            while (final := sample()) < count:
                if not procs.alive(worker):
                    code = procs.exit_code(worker)
                    raise RuntimeError(f"the worker exited ({code}) with {final} emails final")
                if samples[-1][0] > max(900.0, count / 20):
                    raise RuntimeError(f"only {final} of {count} emails final in time")
                time.sleep(1)
        finally:
            procs.stop(worker)
        warm = next(rss for _, final, rss in samples if final >= count * 0.05)
        (end_at, _, end), peak = samples[-1], max(rss for _, _, rss in samples)
        if end_at > queueing_done[0]:
            steady = (count - queueing_done[1]) / (end_at - queueing_done[0])
        else:
            steady = count / end_at
        run.record(
            "soak_rate",
            MAILQUEUE,
            steady,
            count=count,
            seconds=end_at,
            queueing_done=queueing_done,
            statuses=mq.count_by_status(),
        )
        run.record("soak_rss_warm", MAILQUEUE, warm / 1024)
        run.record("soak_rss_end", MAILQUEUE, end / 1024)
        run.record("soak_rss_max", MAILQUEUE, peak / 1024)
        run.record("soak_growth", MAILQUEUE, (end - warm) / warm * 100, rss_samples=samples)

    run.attempt(f"soak {MAILQUEUE}", mailqueue)


ROUND = {
    "batch_1w": lambda run: delivery(run, mode="batch", workers=1),
    "single_1w": lambda run: delivery(run, mode="single", workers=1),
    "batch_2w": lambda run: delivery(run, mode="batch", workers=2),
    "single_2w": lambda run: delivery(run, mode="single", workers=2),
    "wire": wire_peer,
    "http": http_api,
    "priority": priority,
}
ONCE = {"soak": soak}
