"""`make bench`: Mailqueue side by side with django-post_office, bare DRF and raw smtplib.

    make bench                          # 3 rounds of every measure, then the soak
    BENCH_QUICK=1 make bench            # one short round with small counts
    .venv/bin/python -m bench.run --rounds 5 --only batch_1w,http --no-soak

Prints min / median / max of every measure over the rounds, with Mailqueue's median divided
by the peer's, and writes every raw number to bench/results/ (latest.json is the last run).
See bench/README.md for what each number means.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import mailqueue_driver as mq
from bench import measures
from bench.lib import database, procs
from bench.lib.report import Recorder
from bench.peers import bare_drf_peer, post_office_peer

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    """Command line; BENCH_QUICK=1 in the environment is the same as --quick."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="one short round with small counts (also BENCH_QUICK=1)",
    )
    parser.add_argument("--rounds", type=int, help="rounds of the per-round measures")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated measures to run, of: {', '.join([*measures.ROUND, *measures.ONCE])}",
    )
    parser.add_argument("--no-soak", action="store_true", help="skip the memory soak")
    parser.add_argument("--soak", type=int, help="emails sent by the soak's worker")
    return parser.parse_args()


def start_sink(logs: Path) -> tuple[subprocess.Popen, int]:
    """One discarding SMTP server (aiosmtpd's Sink) in its own process, for every contestant."""
    port = procs.free_port()
    sink = procs.start(
        [
            mq.PYTHON,
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-l",
            f"127.0.0.1:{port}",
        ],
        env=dict(os.environ),
        log=logs / "smtp-sink.log",
    )
    procs.wait_for_port(port, process=sink)
    return sink, port


def timed(name: str, measure: Callable[[measures.Run], None], run: measures.Run) -> None:
    """Run one measure and keep how long it took (the JSON's meta.measure_seconds)."""
    started = time.monotonic()
    measure(run)
    seconds = time.monotonic() - started
    run.measure_seconds.setdefault(name, []).append(round(seconds, 1))
    print(f"  ({name}: {seconds:.0f} s)", flush=True)


def meta(args: argparse.Namespace, plan: measures.Plan, started: float) -> dict:
    """What was run, where and with what: stored with the numbers."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, read-only
        capture_output=True,
        text=True,
        check=False,
        cwd=mq.ROOT,
    ).stdout.strip()
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(time.monotonic() - started, 1),
        "quick": args.quick,
        "plan": plan.__dict__,
        "commit": commit,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "mailqueue_env": {k: v for k, v in os.environ.items() if k.startswith("MAILQUEUE_")},
        "peers": (post_office_peer.HERE / "requirements.txt").read_text().split("\n"),
    }


def main() -> int:
    """Run every measure for every round, then the soak; print the table, write the JSON."""
    args = parse_args()
    plan = measures.Plan.quick() if args.quick else measures.Plan.full()
    if args.rounds or args.soak:
        plan = measures.Plan(
            **{
                **plan.__dict__,
                "rounds": args.rounds or plan.rounds,
                "soak": args.soak or plan.soak,
            }
        )
    selected = set(filter(None, args.only.split(","))) or {*measures.ROUND, *measures.ONCE}
    if args.no_soak:
        selected.discard("soak")
    unknown = selected - {*measures.ROUND, *measures.ONCE}
    if unknown:
        sys.exit(f"unknown measures: {', '.join(sorted(unknown))}")
    post_office_peer.check_installed()
    try:
        lock = database.lock_scratch(
            [
                mq.DATABASE_URL,
                mq.REDIS_URL,
                post_office_peer.DATABASE_URL,
                bare_drf_peer.DATABASE_URL,
            ]
        )
    except RuntimeError as exc:
        sys.exit(str(exc))

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    logs = RESULTS / f"logs-{stamp}"
    started = time.monotonic()
    recorder = Recorder(measures.METRICS)
    mq.setup_django()
    try:
        sink, port = start_sink(logs)
        print(f"SMTP sink on 127.0.0.1:{port}; preparing the scratch databases", flush=True)
        mq.recreate_database(logs / "migrate.log")
        post_office_peer.recreate_database(smtp_port=port, log=logs / "migrate.log")
        bare_drf_peer.recreate_database(log=logs / "migrate.log")
        run = measures.Run(
            plan=plan,
            recorder=recorder,
            smtp_port=port,
            sink=sink,
            logs=logs,
            say=lambda line: print(line, flush=True),
        )
        rounds = plan.rounds if selected & set(measures.ROUND) else 0
        for round_no in range(1, rounds + 1):
            run.round_no = round_no
            print(f"round {round_no}/{rounds} ({time.monotonic() - started:.0f} s)")
            for name, measure in measures.ROUND.items():
                if name in selected:
                    timed(name, measure, run)
        for name, measure in measures.ONCE.items():
            if name in selected:
                timed(name, measure, run)
    finally:
        procs.stop_all()
        lock.close()

    print()
    print(recorder.table())
    print("ratio = Mailqueue median / peer median (rates: above 1 is faster; ms: below 1 is)")
    for label, shares in sorted(run.sink_shares.items()):
        if max(shares) > 0.9:
            print(f"warning: the SMTP sink used {max(shares):.0%} of a core during {label}")
    wire_shares = run.sink_shares.get("wire smtplib")
    if wire_shares:
        print(f"SMTP sink CPU during the smtplib peer: {max(wire_shares):.0%} of one core (max)")
    for error in recorder.errors:
        print(f"error in round {error['round']}, {error['what']}: {error['error']}")

    information = meta(args, plan, started)
    information["sink_cpu_share"] = run.sink_shares
    information["measure_seconds"] = run.measure_seconds
    path = RESULTS / f"bench-{stamp}.json"
    recorder.write_json(path, information)
    shutil.copyfile(path, RESULTS / "latest.json")
    print(f"raw numbers: {path} (and {RESULTS / 'latest.json'}); logs: {logs}")
    print(f"took {information['duration_seconds']:.0f} s")
    return 1 if recorder.errors else 0


if __name__ == "__main__":
    sys.exit(main())
