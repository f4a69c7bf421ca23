"""`make bench-scale`: delivery throughput with 1, 2 and 4 worker processes, and who uses the CPU.

    .venv/bin/python -m bench.scale_workers                    # 3,000 emails, 3 rounds, 1/2/4
    .venv/bin/python -m bench.scale_workers --emails 1000 --rounds 1 --workers 1,2

Starts its own PostgreSQL cluster and Redis server on free ports (chaos/services.py; the
cluster made durable again: fsync and synchronous_commit on, as in production) and one
discarding SMTP server (aiosmtpd's Sink) in a process of its own, so that its CPU shows apart.
For each mode, round and number of workers it starts the `rqworker` processes, waits until each
has registered, then commits N emails in one transaction, their jobs reaching Redis at the
commit, and times from the commit to the last email's `sent_at`: worker start-up is not timed.

- `batch`: the emails of batches (`batch_create`), one job per chunk of 100;
- `single`: emails accepted one by one (`email_create`, as the API does), delivered by drain
  jobs that ask for the next drain while they send, so more workers join in.

Prints emails/s (min / median / max over the rounds) and the CPU each component used during
the measure, in cores (CPU seconds per second of the measure): the workers, PostgreSQL (every
process of the private cluster), Redis, the SMTP sink, this harness (it creates the emails
before the clock starts, then only polls), and the whole machine (from /proc/stat), whose
excess over the sum is other programs on the machine.
"""

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.lib import procs
from chaos.services import private_postgres, private_redis

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "bench" / "results" / "scale-logs"
MODES = ("batch", "single")


@dataclass
class Measure:
    """One mode, one number of workers, one round."""

    mode: str
    workers: int
    emails: int
    seconds: float
    emails_per_second: float
    # CPU cores used during the measure, per component.
    cores: dict[str, float] = field(default_factory=dict)
    # CPU milliseconds per email, per component: what it costs wherever it runs.
    cpu_ms_per_email: dict[str, float] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=3000, help="emails per measure")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measure")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--modes", default=",".join(MODES), help=f"of: {', '.join(MODES)}")
    parser.add_argument("--json", type=Path, help="also write every measure to this file")
    parser.add_argument(
        "--no-durable", action="store_true", help="keep the cluster's fsync=off (faster disks)"
    )
    return parser.parse_args()


def postgres_cpu_seconds(data: Path) -> float:
    """CPU used so far by one cluster: its postmaster, its live processes and the exited ones
    the postmaster has reaped."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    live = sum(procs.cpu_seconds(pid) for pid in procs.tree(postmaster)[1:])
    return procs.cpu_seconds(postmaster, children=True) + live


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent not idle so far (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_registered(redis_url: str, count: int, workers: list, timeout: float = 60) -> None:
    """Until `count` workers have registered in Redis (each is then waiting for jobs)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    procs.wait_until(
        lambda: client.scard("rq:workers") >= count,
        timeout=timeout,
        interval=0.05,
        processes=workers,
        what=f"{count} workers registered",
    )


def create_emails(mq, tenant, mode: str, count: int) -> float:
    """Create `count` emails in one transaction; the wall-clock time of its commit."""
    from django.db import transaction

    committed: list[float] = []
    with transaction.atomic():
        # Registered first, so it runs at the commit, before the emails' own enqueueing.
        transaction.on_commit(lambda: committed.append(time.time()))
        if mode == "batch":
            mq.enqueue_batches(tenant, count=count, per_call=1000)
        else:
            mq.enqueue_singles(tenant, count=count)
    return committed[0]


def last_sent_at() -> float:
    """Unix time of the last email sent."""
    from django.db.models import Max

    from mailqueue.models import EmailJob

    return EmailJob.objects.aggregate(last=Max("sent_at"))["last"].timestamp()


def measure(mq, *, mode: str, workers: int, emails: int, smtp_port: int, servers: dict) -> Measure:
    """Start the workers, deliver `emails` emails, stop the workers."""
    tenant = mq.reset()
    log = LOGS / f"{mode}-{workers}w.log"
    started = mq.start_workers(workers, smtp_port=smtp_port, log=log, burst=False)
    try:
        wait_registered(mq.REDIS_URL, workers, started)
        cpu_before = _cpu(started, servers)
        committed = create_emails(mq, tenant, mode, emails)
        cpu_committed = _cpu(started, servers)
        procs.wait_until(
            lambda: mq.count_final() >= emails,
            timeout=max(120.0, emails / 5),
            interval=0.1,
            processes=started,
            what=f"{emails} emails final",
        )
        cpu_after = _cpu(started, servers)
        statuses = mq.count_by_status()
        if statuses.get("sent") != emails:
            raise RuntimeError(f"not every email was sent: {statuses} (see {log})")
        seconds = last_sent_at() - committed
    finally:
        for process in started:
            procs.stop(process)
    wall = cpu_after["wall"] - cpu_committed["wall"]
    used = {name: cpu_after[name] - cpu_committed[name] for name in cpu_after if name != "wall"}
    cores = {name: round(value / wall, 2) for name, value in used.items()}
    per_email = {
        name: round(value / emails * 1000, 2)
        for name, value in used.items()
        if name in ("workers", "postgres", "redis", "sink")
    }
    # The emails were created before the clock started: what accepting them cost this process.
    per_email["accepting"] = round(
        (cpu_committed["harness"] - cpu_before["harness"]) / emails * 1000, 2
    )
    return Measure(
        mode, workers, emails, round(seconds, 2), round(emails / seconds, 1), cores, per_email
    )


def _cpu(workers: list, servers: dict) -> dict[str, float]:
    """CPU seconds used so far by each component, and the wall-clock time."""
    ours = {
        "workers": sum(procs.tree_cpu_seconds(p.pid) for p in workers),
        "postgres": postgres_cpu_seconds(servers["postgres_data"]),
        "redis": procs.cpu_seconds(servers["redis_pid"]),
        "sink": procs.cpu_seconds(servers["sink_pid"]),
        "harness": time.process_time(),
        "machine": machine_busy_seconds(),
    }
    return {**ours, "wall": time.monotonic()}


def report(results: list[Measure]) -> None:
    """Print emails/s, CPU shares and CPU per email per mode and worker count (medians)."""
    print(f"\n{'mode':<7} {'workers':>7} {'emails/s min / median / max':>29}  CPU cores (median)")
    groups = {(m.mode, m.workers): [] for m in results}
    for m in results:
        groups[(m.mode, m.workers)].append(m)
    for (mode, workers), runs in groups.items():
        rates = sorted(m.emails_per_second for m in runs)
        cores = {
            name: statistics.median(m.cores[name] for m in runs)
            for name in ("workers", "postgres", "redis", "sink", "harness", "machine")
        }
        ours = sum(value for name, value in cores.items() if name != "machine")
        shares = " ".join(f"{name}={value:.2f}" for name, value in cores.items())
        print(
            f"{mode:<7} {workers:>7} {rates[0]:>9.0f} / {statistics.median(rates):>6.0f} / "
            f"{rates[-1]:>6.0f}  {shares} others={max(0.0, cores['machine'] - ours):.2f}"
        )
    print(f"\n{'mode':<7} {'workers':>7}  CPU ms per email (median)")
    for (mode, workers), runs in groups.items():
        costs = {
            name: statistics.median(m.cpu_ms_per_email[name] for m in runs)
            for name in runs[0].cpu_ms_per_email
        }
        print(f"{mode:<7} {workers:>7}  " + " ".join(f"{k}={v:.2f}" for k, v in costs.items()))


def main() -> None:
    """Run every measure against private servers and print the table."""
    args = parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    modes = [mode for mode in args.modes.split(",") if mode]
    if unknown := set(modes) - set(MODES):
        sys.exit(f"unknown mode(s): {', '.join(sorted(unknown))}")
    LOGS.mkdir(parents=True, exist_ok=True)
    with private_postgres() as postgres, private_redis() as redis_server:
        if not args.no_durable:
            # One -c each: ALTER SYSTEM refuses to run inside a multi-statement transaction.
            postgres._run(
                "psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres",
                "-c", "ALTER SYSTEM SET fsync = on",
                "-c", "ALTER SYSTEM SET synchronous_commit = on",
                "-c", "ALTER SYSTEM SET full_page_writes = on",
                "-c", "SELECT pg_reload_conf()",
            )  # fmt: skip
        # bench.mailqueue_driver reads where its scratch services are when imported.
        os.environ["BENCH_DATABASE_URL"] = postgres.url("mailqueue_scale")
        os.environ["BENCH_REDIS_URL"] = redis_server.url
        from bench import mailqueue_driver as mq

        mq.recreate_database(LOGS / "migrate.log")
        mq.setup_django()
        port = procs.free_port()
        sink = procs.start(
            [mq.PYTHON, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
             "-l", f"127.0.0.1:{port}"],
            env=mq.base_env(), log=LOGS / "smtp-sink.log", cwd=ROOT,
        )  # fmt: skip
        procs.wait_for_port(port, process=sink)
        servers = {
            "postgres_data": postgres.data,
            "redis_pid": redis_server.process.pid,
            "sink_pid": sink.pid,
        }
        print(
            f"{args.emails} emails per measure, {args.rounds} round(s), workers {counts}, "
            f"{os.cpu_count()} CPUs, PostgreSQL {'durable' if not args.no_durable else 'fsync off'}"
            f"; logs in {LOGS}",
            flush=True,
        )
        results: list[Measure] = []
        try:
            for round_number in range(1, args.rounds + 1):
                for mode in modes:
                    for workers in counts:
                        result = measure(
                            mq,
                            mode=mode,
                            workers=workers,
                            emails=args.emails,
                            smtp_port=port,
                            servers=servers,
                        )
                        results.append(result)
                        print(
                            f"round {round_number} {mode:<6} {workers} worker(s): "
                            f"{result.emails_per_second:.0f} emails/s in {result.seconds:.1f} s "
                            f"cores {json.dumps(result.cores)} "
                            f"ms/email {json.dumps(result.cpu_ms_per_email)}",
                            flush=True,
                        )
        finally:
            procs.stop_all()
            from django.db import connections

            connections.close_all()
        report(results)
        if args.json:
            args.json.write_text(json.dumps([asdict(m) for m in results], indent=2))


if __name__ == "__main__":
    main()
