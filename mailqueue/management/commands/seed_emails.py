"""`manage.py seed_emails --count 1000000`: realistic email history, to measure the admin at scale.

    python manage.py seed_emails --count 1000000 [--batch-size 20000] [--client seed]

See bench/lib/seeding.py: rows go straight into the tables (COPY on PostgreSQL); nothing is
enqueued or delivered. `--with-waiting` also seeds emails a running sweeper would send. The
seeding code is load-test tooling and lives with the benchmarks, so the command works from a
checkout of the repository, not from the Docker image (which has no `bench/`).
"""

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    """Insert realistic email history for load tests; enqueues nothing."""

    help = (
        "Insert realistic email history (sent/failed/cancelled emails with their events) for "
        "load tests. Enqueues nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """--count, --batch-size, --client, --with-waiting, --random-seed."""
        parser.add_argument("--count", type=int, default=100_000, help="Emails to insert.")
        parser.add_argument(
            "--batch-size", type=int, default=20_000, help="Emails per transaction."
        )
        parser.add_argument(
            "--client", default="seed", help="Client owning the emails (created if needed)."
        )
        parser.add_argument(
            "--with-waiting",
            action="store_true",
            help="Also seed ~1%% queued/retrying/scheduled emails. A running sweeper enqueues "
            "them and a worker sends them: scratch databases only.",
        )
        parser.add_argument(
            "--random-seed", type=int, default=None, help="Make the generated data repeatable."
        )

    def handle(
        self,
        *args,
        count: int,
        batch_size: int,
        client: str,
        with_waiting: bool,
        random_seed: int | None,
        **options,
    ) -> None:
        """Seed, printing progress every five transactions."""
        if count < 1 or batch_size < 1:
            raise CommandError("--count and --batch-size must be positive.")
        try:
            from bench.lib.seeding import emails_seed
        except ModuleNotFoundError as exc:
            if exc.name not in ("bench", "bench.lib", "bench.lib.seeding"):
                raise
            raise CommandError(
                "seed_emails needs the benchmarks (bench/lib/seeding.py): run it from a checkout "
                "of the repository, not from the Docker image."
            ) from None

        def progress(done: int, elapsed: float) -> None:
            if options["verbosity"] >= 1 and (done == count or done % (batch_size * 5) == 0):
                self.stdout.write(f"  {done:>9,} emails  {done / elapsed:>9,.0f} rows/s")

        report = emails_seed(
            count=count,
            client_name=client,
            batch_size=batch_size,
            with_waiting=with_waiting,
            random_seed=random_seed,
            progress=progress,
        )
        mix = ", ".join(f"{status} {n:,}" for status, n in sorted(report.by_status.items()))
        self.stdout.write(
            f"Seeded {report.emails:,} emails ({mix}) and {report.events:,} tracking events for "
            f"client '{client}' in {report.total_seconds:.1f} s: "
            f"{report.emails / report.insert_seconds:,.0f} emails/s inserted, "
            f"{report.total_seconds - report.insert_seconds:.1f} s analyze."
        )
