"""How fast the admin's list pages answer with a million emails, printed as a Markdown table.

    .venv/bin/python bench/admin_changelist.py                   # seeds 1,000,000 emails once
    .venv/bin/python bench/admin_changelist.py --reseed --count 1000000 --batch-size 20000
    .venv/bin/python bench/admin_changelist.py --explain --slow-ms 200   # EXPLAIN slow pages

Uses a scratch PostgreSQL database (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/mailqueue_admin_bench), created and migrated if missing and
kept between runs: the emails are seeded (`manage.py seed_emails`) only when the table holds
fewer than --count rows, or with --reseed. Redis DB 13 (BENCH_REDIS_URL) is only read, by pages
that show queue depths. Each page is requested --repeat times through django.test.Client as a
logged-in superuser, with production settings (DEBUG off); the table gives the median and the
slowest time (the first, cold request is included), the number of SQL queries, their total time
and the slowest of them. A page that answers 404 (or redirects: an unknown admin URL is read as
an object id) is reported as not available.
"""

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mailqueue_admin_bench"
)
os.environ["DATABASE_URL"] = DATABASE_URL
os.environ["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "bench")
os.environ.setdefault("EMAIL_PROVIDERS", "capture")
os.environ["ALLOWED_HOSTS"] = "testserver"
os.environ.setdefault("LOG_LEVEL", "ERROR")
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"

EMAILS = "/admin/mailqueue/emailjob/"
USERNAME = "bench-admin"
PASSWORD = "bench-admin-password"  # a scratch database only


@dataclass
class Case:
    """One page to time; the first of `urls` that answers 200 is measured."""

    page: str
    request: str
    urls: list[str]


@dataclass
class Result:
    """What the timed requests of one case gave."""

    case: Case
    url: str
    status: int
    times_ms: list[float] = field(default_factory=list)
    queries: int = 0
    sql_ms: list[float] = field(default_factory=list)
    slowest_sql: str = ""
    slowest_sql_ms: float = 0.0
    note: str = ""

    @property
    def median_ms(self) -> float:
        """Median of the timed requests."""
        return statistics.median(self.times_ms) if self.times_ms else 0.0


def ensure_database() -> None:
    """Create the scratch database if it does not exist (it is kept between runs)."""
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    with psycopg.connect(DATABASE_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def seed(*, count: int, batch_size: int, reseed: bool) -> float | None:
    """Seed `count` emails unless the table already holds that many; the seconds it took."""
    from django.core.management import call_command
    from django.db import connection

    from mailqueue.models import EmailJob

    existing = EmailJob.objects.count()
    if existing >= count and not reseed:
        return None
    if existing:
        with connection.cursor() as cursor:
            # CASCADE empties the tables pointing at emails too (events, attempts, captures).
            cursor.execute("TRUNCATE email_jobs, email_batches CASCADE")
    began = time.monotonic()
    call_command("seed_emails", count=count, batch_size=batch_size, stdout=sys.stdout)
    return time.monotonic() - began


def cases() -> list[Case]:
    """The pages to time, with ids and values taken from the seeded data."""
    from django.db.models import Count
    from django.utils import timezone

    from mailqueue.models import EmailJob, EmailStatus

    newest = EmailJob.objects.order_by("-created_at", "-id").only("pk", "recipient").first()
    template_id = (
        EmailJob.objects.filter(created_at__gte=timezone.now() - timedelta(days=1))
        .exclude(template=None)
        .values_list("template_id", flat=True)
        .first()
    )
    group = (
        EmailJob.objects.filter(status=EmailStatus.FAILED)
        .values("error_group")
        .annotate(n=Count("pk"))
        .order_by("-n")
        .values_list("error_group", flat=True)
        .first()
    )
    # The value the admin's own "Past 7 days" link carries: local midnight, with its offset.
    week_ago = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=7
    )
    address = newest.recipient if newest else "nobody@example.com"
    return [
        Case("Emails", "no filter", [EMAILS]),
        Case("Emails", "status = failed", [f"{EMAILS}?status__exact=failed"]),
        Case("Emails", "priority = high", [f"{EMAILS}?priority__exact=high"]),
        Case(
            "Emails",
            "one template",
            [f"{EMAILS}?template__id__exact={template_id}", f"{EMAILS}?template={template_id}"],
        ),
        Case(
            "Emails",
            "created in the last 7 days",
            [f"{EMAILS}?{urlencode({'created_at__gte': str(week_ago)})}"],
        ),
        Case("Emails", "search: full address", [f"{EMAILS}?{urlencode({'q': address})}"]),
        Case("Emails", "search: prefix `user12`", [f"{EMAILS}?q=user12"]),
        Case("Emails", "page 2", [f"{EMAILS}?p=2"]),
        Case("Emails", "page 500", [f"{EMAILS}?p=500"]),
        Case(
            "Emails",
            "failed, one error group",
            [f"{EMAILS}?status__exact=failed&error_group={group}"],
        ),
        Case("Email detail", "newest email", [f"{EMAILS}{newest.pk}/change/" if newest else ""]),
        Case("Dead letters", "failed emails grouped by error", [f"{EMAILS}dead-letters/"]),
        Case("Admin home", "dashboard", ["/admin/"]),
        Case("Tracking events", "no filter", ["/admin/tracking/trackingevent/"]),
        Case(
            "Tracking events",
            "type = failed",
            ["/admin/tracking/trackingevent/?event_type__exact=failed"],
        ),
        Case("Batches", "no filter", ["/admin/mailqueue/batch/"]),
    ]


def measure(client, case: Case, repeat: int) -> Result:
    """Request the case's first URL that answers 200, `repeat` times."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    result = Result(case=case, url=case.urls[0], status=0)
    for url in case.urls:
        result = Result(case=case, url=url, status=0)
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                response = client.get(url)
                elapsed = (time.perf_counter() - began) * 1000
            result.status = response.status_code
            if response.status_code != 200:
                result.note = _not_measured(response)
                break
            result.times_ms.append(elapsed)
            result.queries = len(captured.captured_queries)
            result.sql_ms.append(sum(float(q["time"]) * 1000 for q in captured.captured_queries))
            for query in captured.captured_queries:
                ms = float(query["time"]) * 1000
                if ms > result.slowest_sql_ms:
                    result.slowest_sql_ms, result.slowest_sql = ms, query["sql"]
        if result.status == 200:
            break
    return result


def _not_measured(response) -> str:
    if response.status_code == 404:
        return "not available yet (404)"
    if response.status_code == 302:
        location = response.headers.get("Location", "")
        if location.endswith("?e=1"):
            return "parameter refused by the change list (302 to ?e=1)"
        return f"not available yet (302 to {location})"
    return f"HTTP {response.status_code}"


def explain(sql: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one captured query."""
    from django.db import connection

    if not sql.lstrip().upper().startswith("SELECT"):
        return "(not a SELECT: not explained)"
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def table(results: list[Result]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| Page | Request | Median ms | Max ms | Queries | SQL ms | Slowest query ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        request = f"{r.case.request} (`{_short(r.url)}`)" if r.url else r.case.request
        if r.status != 200:
            lines.append(f"| {r.case.page} | {request} | {r.note} | | | | |")
            continue
        lines.append(
            f"| {r.case.page} | {request} | {r.median_ms:.0f} | {max(r.times_ms):.0f} | "
            f"{r.queries} | {statistics.median(r.sql_ms):.0f} | {r.slowest_sql_ms:.0f} |"
        )
    return "\n".join(lines)


def _short(url: str) -> str:
    # Ids and addresses make the table wide without saying more.
    path, _, query = url.partition("?")
    if not query:
        return path.replace(EMAILS, "…/emailjob/") if len(path) > 40 else path
    parts = [p if len(p) <= 30 else p[:27] + "…" for p in query.split("&")]
    return "?" + "&".join(parts)


def main() -> None:
    """Seed if needed, time the pages, print the table (and EXPLAIN of slow ones)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="emails to seed")
    parser.add_argument("--batch-size", type=int, default=20_000, help="emails per transaction")
    parser.add_argument("--reseed", action="store_true", help="empty the tables and seed again")
    parser.add_argument("--repeat", type=int, default=5, help="requests per page")
    parser.add_argument("--slow-ms", type=float, default=500, help="median that counts as slow")
    parser.add_argument(
        "--explain", action="store_true", help="EXPLAIN ANALYZE the slowest query of slow pages"
    )
    args = parser.parse_args()

    ensure_database()
    # Static files are not collected for the benchmark (see plain_static below).
    warnings.filterwarnings("ignore", message="No directory at")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import override_settings

    from mailqueue.models import Batch, EmailJob
    from tracking.models import TrackingEvent

    call_command("migrate", "--no-input", verbosity=0)
    seconds = seed(count=args.count, batch_size=args.batch_size, reseed=args.reseed)
    if seconds is None:
        print(f"Already seeded (--reseed to start again): {EmailJob.objects.count():,} emails")
    else:
        print(f"seed_emails took {seconds:.1f} s (wall clock)")

    user_model = get_user_model()
    if not user_model.objects.filter(username=USERNAME).exists():
        user_model.objects.create_superuser(USERNAME, "bench@example.com", PASSWORD)
    # DEBUG off means hashed static files from `collectstatic`; the plain storage gives the same
    # pages without collecting them first.
    plain_static = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(STORAGES=plain_static):
        client = Client()
        if not client.login(username=USERNAME, password=PASSWORD):
            raise SystemExit("could not log in the benchmark superuser")
        client.get("/admin/")  # load templates and code once, outside the timings
        results = [measure(client, case, args.repeat) for case in cases()]

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    print()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"{EmailJob.objects.count():,} emails, {TrackingEvent.objects.count():,} tracking events, "
        f"{Batch.objects.count():,} batches; PostgreSQL {server}; {os.cpu_count()} CPUs "
        f"(load average {load}); Python {platform.python_version()}; {args.repeat} requests "
        "per page."
    )
    print()
    print(table(results))
    slow = [r for r in results if r.times_ms and r.median_ms >= args.slow_ms]
    if slow:
        print(f"\nPages with a median of {args.slow_ms:.0f} ms or more:")
    for r in slow:
        print(f"\n## {r.case.page}: {r.case.request} ({r.median_ms:.0f} ms median)")
        print(f"Slowest query ({r.slowest_sql_ms:.0f} ms):\n{r.slowest_sql}")
        if args.explain:
            print(explain(r.slowest_sql))


if __name__ == "__main__":
    main()
