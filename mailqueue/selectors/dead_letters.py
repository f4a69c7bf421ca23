"""Dead letters: failed and retrying emails grouped by error, for the admin (every client) and
the failed-email API (one client, or every client for an `all_clients` key)."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, Min, Q, QuerySet

from mailqueue.models import EmailJob, EmailStatus
from mailqueue.selectors.emails import email_list
from mailqueue.services.dead_letters import error_pattern

# More groups than this means something else is wrong; the page shows the biggest ones.
DEAD_LETTER_GROUPS_SHOWN = 200
# Retrying rows are not in the failed rows' partial indexes: their groups are computed in Python
# over this many of the most recently updated ones.
RETRYING_ROWS_EXAMINED = 5000


@dataclass(frozen=True)
class DeadLetterGroup:
    """Emails that failed (or keep failing) for the same reason."""

    key: str
    error_class: str
    pattern: str
    count: int
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True)
class RetryingGroups:
    """Retrying emails grouped by error, computed over the most recently updated rows."""

    groups: list[DeadLetterGroup]
    examined: int
    truncated: bool


def _group_span() -> dict:
    # COUNT(*), not COUNT(id): every column read is in the partial index on failed rows.
    return {"count": Count("*"), "first_seen": Min("updated_at"), "last_seen": Max("updated_at")}


def _group(
    *, key: str, sample: dict, count: int, first_seen: datetime, last_seen: datetime
) -> DeadLetterGroup:
    return DeadLetterGroup(
        key=key,
        error_class=sample.get("error_class", ""),
        pattern=error_pattern(sample.get("last_error", "")),
        count=count,
        first_seen=first_seen,
        last_seen=last_seen,
    )


def dead_letter_groups(
    *, emails: QuerySet[EmailJob] | None = None, limit: int = DEAD_LETTER_GROUPS_SHOWN
) -> list[DeadLetterGroup]:
    """Failed emails (all of them, or those of `emails`) grouped by error, biggest group first
    (then the one that failed last), with when each group failed.

    One GROUP BY (unfiltered, over the partial index on failed rows: key and time only, so an
    index-only scan), then one small query for a sample of each group: the row that failed last.
    """
    if emails is None:
        emails = EmailJob.objects.filter(status=EmailStatus.FAILED)
    rows = list(
        emails.values("error_group")
        .annotate(**_group_span())
        .order_by("-count", "-last_seen", "error_group")[:limit]
    )
    if not rows:
        return []
    # (group, updated_at) pairs hit the partial index exactly: one probe per group.
    latest = Q()
    for row in rows:
        latest |= Q(error_group=row["error_group"], updated_at=row["last_seen"])
    samples: dict[str, dict] = {}
    for sample in (
        emails.filter(latest).order_by().values("error_group", "error_class", "last_error")
    ):
        samples.setdefault(sample["error_group"], sample)
    groups = []
    for row in rows:
        key = row.pop("error_group")
        sample = samples.get(key)
        if sample is None:
            # Its last row changed between the two queries (retried just now): any row will do.
            sample = (
                emails.filter(error_group=key).values("error_class", "last_error").first() or {}
            )
        groups.append(_group(key=key, sample=sample, **row))
    return groups


def dead_letter_group_get(*, error_group: str) -> DeadLetterGroup | None:
    """One dead-letter group by key (for the filtered email list's header), or None."""
    rows = email_list(client=None, status=EmailStatus.FAILED, error_group=error_group)
    span = rows.aggregate(**_group_span())
    if not span["count"]:
        return None
    sample = rows.order_by("-updated_at").values("error_class", "last_error").first() or {}
    return _group(key=error_group, sample=sample, **span)


def _recent_retrying_rows(limit: int) -> list[dict]:
    # Served by the (status, updated_at) index: the newest retrying rows, never the whole table.
    return list(
        EmailJob.objects.filter(status=EmailStatus.RETRYING)
        .order_by("-updated_at")
        .values("pk", "error_class", "last_error", "error_group", "updated_at")[:limit]
    )


def retrying_groups(*, limit_rows: int = RETRYING_ROWS_EXAMINED) -> RetryingGroups:
    """Emails still being retried, grouped by their stored error group, biggest first.

    Computed over at most `limit_rows` of the most recently updated retrying emails. The key is
    the one stored with the error (the one "cancel all in this group" filters on), so a group
    and its action always cover the same emails.
    """
    rows = _recent_retrying_rows(limit_rows + 1)
    truncated = len(rows) > limit_rows
    rows = rows[:limit_rows]
    # Rows come newest first: a group's first row is its sample and its last_seen.
    samples: dict[str, dict] = {}
    spans: dict[str, dict] = {}
    for row in rows:
        key = row["error_group"]
        samples.setdefault(key, row)
        span = spans.setdefault(key, {"count": 0, "last_seen": row["updated_at"]})
        span["count"] += 1
        span["first_seen"] = row["updated_at"]
    groups = sorted(
        (_group(key=key, sample=samples[key], **span) for key, span in spans.items()),
        key=lambda group: (-group.count, -group.last_seen.timestamp()),
    )
    return RetryingGroups(groups=groups, examined=len(rows), truncated=truncated)
