"""Realistic email history for load tests of the admin (`manage.py seed_emails`,
`bench/admin_changelist.py`).

Load-test tooling, so it lives with the benchmarks, outside the `mailqueue` app and the Docker
image; the `seed_emails` command imports it when it runs.

Writes EmailJob rows (with their batches and their `sent`/`failed` tracking events) straight into
the tables: COPY on PostgreSQL (about 11,000 emails a second on two cores), batched INSERTs on
other databases. Nothing is enqueued in Redis and nothing is delivered: the rows are history. By
default every email is sent, failed or cancelled, so no worker and no sweeper has anything to do
with them. `with_waiting` adds a small share of queued, retrying and scheduled emails; a running
sweeper finds those rows (their RQ job does not exist) and enqueues them, so a worker would then
really send them: use it on scratch databases only. Every seeded email is tagged `seed`.
"""

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, models, transaction
from django.utils import timezone

from mailqueue import conf
from mailqueue.errors import MailqueueError
from mailqueue.models import Batch, Client, EmailJob, EmailStatus, Priority
from mailqueue.scheduling import email_job_id
from mailqueue.services.dead_letters import error_group_key
from templates_app.models import EmailTemplate, EmailTemplateVersion
from templates_app.rendering import render_part
from templates_app.services import template_create
from tracking.models import EventType, TrackingEvent

SEED_TAG = "seed"
HISTORY_DAYS = 90

# Status shares. Terminal statuses only by default: nothing for a worker or the sweeper to do.
TERMINAL_MIX = {EmailStatus.SENT: 92.0, EmailStatus.FAILED: 6.0, EmailStatus.CANCELLED: 2.0}
# With --with-waiting, a sliver of the sent share becomes emails still on their way.
WAITING_MIX = {EmailStatus.QUEUED: 0.3, EmailStatus.RETRYING: 0.2, EmailStatus.SCHEDULED: 0.5}
WAITING = frozenset(WAITING_MIX)
PRIORITY_MIX = {Priority.DEFAULT: 70.0, Priority.HIGH: 15.0, Priority.LOW: 15.0}

# About one email in five belongs to a batch of 100-1000 (same template, priority and moment).
BATCH_START_PROBABILITY = 1 / 2200
BATCH_SIZES = (100, 1000)
RAW_CONTENT_SHARE = 0.15
MULTI_RECIPIENT_SHARE = 0.02

DOMAINS = ("example.com", "example.org", "example.net", "mail.test", "acme.test", "shop.test")
FIRST_NAMES = (
    "Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Radia", "Edsger",
    "Frances", "Donald", "Hedy", "Tim", "Katherine", "Guido", "Sophie", "John", "Anita", "Niklaus",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson",
    "Perlman", "Dijkstra", "Allen", "Knuth", "Lamarr", "Berners-Lee", "Johnson", "van Rossum",
)  # fmt: skip
TAG_SETS = (
    ["onboarding"],
    ["billing", "invoice"],
    ["security"],
    ["orders"],
    ["orders", "shipping"],
    ["password-reset"],
    [],
)
RAW_SUBJECTS = (
    "Your weekly report is ready",
    "Invoice {n} is available",
    "Action required: confirm your address",
    "Your export has finished",
    "New sign-in to your account",
)
PROVIDERS = ("smtp", "smtp", "smtp", "amazon_ses")


@dataclass(frozen=True)
class SeedError:
    """A realistic failure: the exception class a provider raised and its message shape."""

    error_class: str
    message: str  # `{address}` and `{n}` are filled in per email
    weight: float
    # Transient errors fail only after the last attempt; permanent ones at the first.
    transient: bool = False
    rendered: bool = True


# Also the last error of seeded `retrying` emails.
TIMEOUT = SeedError("builtins.TimeoutError", "timed out", 10, transient=True)
SEED_ERRORS = (
    SeedError(
        "smtplib.SMTPRecipientsRefused",
        "Recipients refused: {address}: 550 5.1.1 <{address}>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
        45,
    ),
    SeedError(
        "smtplib.SMTPRecipientsRefused",
        "Recipients refused: {address}: 552 5.2.2 <{address}>: Mailbox full",
        15,
    ),
    SeedError(
        "smtplib.SMTPDataError",
        "554 5.7.1 Message {n} rejected due to content policy",
        7,
    ),
    TIMEOUT,
    SeedError(
        "builtins.ConnectionRefusedError", "[Errno 111] Connection refused", 8, transient=True
    ),
    SeedError(
        "anymail.exceptions.AnymailAPIError",
        "Email address is not verified. The following identities failed the check in region "
        "EU-WEST-1: {address}",
        5,
    ),
    SeedError(
        "anymail.exceptions.AnymailRecipientsRefused",
        "All message recipients were rejected: {address} (rejected)",
        5,
    ),
    SeedError(
        "render",
        "html: Could not parse the remainder: ' | money' from 'total | money' (line 12: "
        "'{{{{ total | money }}}}')",
        5,
        rendered=False,
    ),
)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _cumulative(weights: Iterable[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


class TableWriter:
    """Writes rows of one model given as tuples of `attnames`; other columns get their default.

    Values are what psycopg adapts (UUID, datetime, int, str), with JSON columns already
    serialized to text, so COPY sends them without any per-value work in Django.
    """

    def __init__(self, model: type[models.Model], attnames: Sequence[str]) -> None:
        meta = model._meta
        given = [meta.get_field(name) for name in attnames]
        # Every other column gets its Python default (a field added later keeps working); the
        # auto-incremented key and columns with a database default are left to the database.
        rest = [
            f
            for f in meta.concrete_fields
            if f.attname not in attnames
            and not isinstance(f, models.AutoField | models.BigAutoField | models.SmallAutoField)
            and f.db_default is models.NOT_PROVIDED
        ]
        quote = connection.ops.quote_name
        self.table = quote(meta.db_table)
        self.fields = given + rest
        self.defaults = tuple(_text_if_json(f, f.get_default()) for f in rest)
        self.columns = ", ".join(quote(f.column) for f in self.fields)

    def write(self, rows: Iterable[tuple]) -> None:
        """Insert the rows (COPY on PostgreSQL, batched INSERTs elsewhere)."""
        defaults = self.defaults
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                with cursor.copy(f"COPY {self.table} ({self.columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row + defaults)
                return
            # Raw INSERTs, not bulk_create: bulk_create would overwrite the spread-out
            # created_at (auto_now_add) with the time of the insert.
            prepared = [
                [
                    value
                    if isinstance(f, models.JSONField)
                    else f.get_db_prep_save(value, connection)
                    for f, value in zip(self.fields, row + defaults, strict=True)
                ]
                for row in rows
            ]
            if not prepared:
                return
            placeholders = ", ".join(["%s"] * len(self.fields))
            cursor.executemany(
                # Table and column names come from the model, values are parameters.
                f"INSERT INTO {self.table} ({self.columns}) "  # noqa: S608
                f"VALUES ({placeholders})",
                prepared,
            )


def _text_if_json(f: models.Field, value: object) -> object:
    return _json(value) if isinstance(f, models.JSONField) else value


EMAIL_COLUMNS = (
    "id", "client_id", "batch_id", "status", "priority", "from_email", "to", "recipient",
    "to_addresses", "tags", "metadata", "template_id", "template_version_id", "context",
    "subject", "html", "text", "send_at", "next_attempt_at", "attempts", "max_attempts",
    "last_error", "error_class", "error_group", "rq_job_id", "provider", "message_id", "sent_at",
    "created_at", "updated_at",
)  # fmt: skip
EVENT_COLUMNS = (
    "email_id", "event_type", "occurred_at", "provider", "recipient", "description", "data",
    "created_at",
)  # fmt: skip
BATCH_COLUMNS = (
    "id", "client_id", "template_id", "context", "priority", "tags", "count", "created_at",
)  # fmt: skip


@dataclass
class SeedTemplate:
    """A template the seeded emails use, with subjects pre-rendered per first name."""

    id: int
    version_id: int | None
    subjects: dict[str, str]
    contexts: dict[str, str]


@dataclass
class Chunk:
    """The rows of one transaction."""

    batches: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class BatchRun:
    """A batch being written: its emails share these and are created one after another."""

    id: uuid.UUID
    size: int
    remaining: int
    template: SeedTemplate
    priority: str
    tags: str
    created_at: datetime


class EmailSeeder:
    """Generates consistent email rows over the last HISTORY_DAYS days, oldest first."""

    def __init__(
        self,
        *,
        count: int,
        client: Client,
        templates: list[SeedTemplate],
        with_waiting: bool,
        rng: random.Random,
    ) -> None:
        self.count = count
        self.client_id = client.pk
        self.templates = templates
        self.rng = rng
        self.now = timezone.now()
        self.start = self.now - timedelta(days=HISTORY_DAYS)
        self.step = (self.now - self.start) / max(count, 1)
        mix = dict(TERMINAL_MIX)
        if with_waiting:
            mix[EmailStatus.SENT] -= sum(WAITING_MIX.values())
            mix.update(WAITING_MIX)
        self.statuses = list(mix)
        self.status_weights = _cumulative(mix.values())
        self.priorities = list(PRIORITY_MIX)
        self.priority_weights = _cumulative(PRIORITY_MIX.values())
        self.errors = SEED_ERRORS
        self.error_weights = _cumulative(e.weight for e in SEED_ERRORS)
        # Many distinct recipients, a few of them receiving far more mail than the rest.
        self.address_count = max(1000, count // 5)
        self.max_attempts = conf.max_attempts()
        self.tag_texts = [_json([*tags, SEED_TAG]) for tags in TAG_SETS]
        self.batch: BatchRun | None = None

    def address(self, n: int) -> tuple[str, str]:
        """The `to` entry (sometimes with a display name or capitals) and its addr-spec."""
        domain = DOMAINS[n % len(DOMAINS)]
        first = FIRST_NAMES[n % len(FIRST_NAMES)]
        spec = f"user{n}@{domain}"
        shown = f"User{n}@{domain.capitalize()}" if n % 50 == 0 else spec
        if n % 10 < 3:
            last = LAST_NAMES[(n // 7) % len(LAST_NAMES)]
            shown = f"{first} {last} <{shown}>"
        return shown, spec

    def emails(self, start: int, size: int, chunk: Chunk) -> Iterator[tuple]:
        """Email rows number start .. start+size-1 (of `count`), generated as COPY consumes them.

        Their batches and events are collected in `chunk`, to be written after them in the same
        transaction (the foreign keys are checked at commit).
        """
        rng = self.rng
        statuses = rng.choices(self.statuses, cum_weights=self.status_weights, k=size)
        priorities = rng.choices(self.priorities, cum_weights=self.priority_weights, k=size)
        for offset in range(size):
            index = start + offset
            status = statuses[offset]
            batch = self._batch_for(index, chunk)
            if batch is not None:
                created_at = batch.created_at + timedelta(
                    milliseconds=3 * (batch.size - batch.remaining)
                )
                batch.remaining -= 1
                template, priority, tags = batch.template, batch.priority, batch.tags
                batch_id = batch.id
            else:
                created_at = self.start + self.step * index + timedelta(seconds=rng.random() * 30)
                template = None if rng.random() < RAW_CONTENT_SHARE else rng.choice(self.templates)
                priority = priorities[offset]
                tags = rng.choice(self.tag_texts)
                batch_id = None
            chunk.counts[status] = chunk.counts.get(status, 0) + 1
            yield self._email(chunk, status, priority, template, tags, batch_id, created_at)

    def _batch_for(self, index: int, chunk: Chunk) -> BatchRun | None:
        if self.batch is not None and self.batch.remaining > 0:
            return self.batch
        self.batch = None
        if self.rng.random() >= BATCH_START_PROBABILITY:
            return None
        size = min(self.rng.randint(*BATCH_SIZES), self.count - index)
        template = self.rng.choice(self.templates)
        run = BatchRun(
            id=uuid.UUID(int=self.rng.getrandbits(128), version=4),
            size=size,
            remaining=size,
            template=template,
            priority=Priority.LOW if self.rng.random() < 0.7 else Priority.DEFAULT,
            tags=self.rng.choice(self.tag_texts),
            created_at=self.start + self.step * index,
        )
        chunk.batches.append(
            (
                run.id,
                self.client_id,
                template.id,
                template.contexts[FIRST_NAMES[0]],
                run.priority,
                run.tags,
                size,
                run.created_at,
            )
        )
        self.batch = run
        return run

    def _email(
        self,
        chunk: Chunk,
        status: str,
        priority: str,
        template: SeedTemplate | None,
        tags: str,
        batch_id: uuid.UUID | None,
        created_at: datetime,
    ) -> tuple:
        # One long function on purpose: the status sets several columns together (times, error,
        # provider, the event rows), and it returns the row in EMAIL_COLUMNS order, once per
        # seeded email.
        rng = self.rng
        email_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        # Low numbers are the heavy receivers (a shared inbox, a test account, ...).
        n = int(self.address_count * rng.random() ** 1.5)
        shown, spec = self.address(n)
        to, specs = [shown], [spec]
        if rng.random() < MULTI_RECIPIENT_SHARE:
            other_shown, other_spec = self.address(rng.randrange(self.address_count))
            to.append(other_shown)
            specs.append(other_spec)
        first = FIRST_NAMES[n % len(FIRST_NAMES)]
        if template is not None:
            subject = template.subjects[first]
            context = template.contexts[first]
            template_id, version_id = template.id, template.version_id
        else:
            subject = rng.choice(RAW_SUBJECTS).format(n=f"INV-{n:06d}")
            context = "{}"
            template_id = version_id = None
        html = f"<p>Hi {first},</p><p>{subject}.</p>"
        text = f"Hi {first},\n\n{subject}.\n"

        send_at = next_attempt_at = sent_at = None
        attempts = 0
        last_error = error_class = error_group = provider = message_id = ""
        updated_at = created_at
        if status in WAITING:
            # Still on its way: created in the last hour whatever its place in the history.
            created_at = updated_at = self.now - timedelta(seconds=rng.random() * 3600)
            if status == EmailStatus.SCHEDULED:
                send_at = self.now + timedelta(hours=1 + rng.random() * 24 * 7)
            elif status == EmailStatus.RETRYING:
                error = TIMEOUT
                attempts = rng.randint(1, self.max_attempts - 1)
                last_error, error_class = error.message, error.error_class
                next_attempt_at = self.now + timedelta(seconds=60 + rng.random() * 3600)
        elif status == EmailStatus.SENT:
            attempts = 1 if rng.random() < 0.97 else rng.randint(2, self.max_attempts)
            sent_at = updated_at = created_at + timedelta(
                seconds=0.2 + rng.random() * 5 + (attempts - 1) * 60
            )
            provider = rng.choice(PROVIDERS)
            message_id = (
                f"{email_id.hex}@{DOMAINS[0]}"
                if provider == "smtp"
                else f"0102{rng.getrandbits(120):030x}-000000"
            )
            chunk.events.append(
                (
                    email_id,
                    EventType.SENT,
                    sent_at,
                    provider,
                    spec,
                    "",
                    _json({"message_id": message_id}),
                    sent_at,
                )
            )
        elif status == EmailStatus.FAILED:
            error = rng.choices(self.errors, cum_weights=self.error_weights)[0]
            last_error = error.message.format(address=spec, n=rng.randrange(10**6, 10**7))
            error_class = error.error_class
            error_group = error_group_key(error_class=error_class, message=last_error)
            attempts = self.max_attempts if error.transient else 1
            updated_at = created_at + timedelta(seconds=1 + rng.random() * 5 + (attempts - 1) * 600)
            provider = "" if not error.rendered else rng.choice(PROVIDERS)
            kind = "gave up after the last attempt" if error.transient else "permanent error"
            chunk.events.append(
                (
                    email_id,
                    EventType.FAILED,
                    updated_at,
                    provider,
                    spec,
                    f"{kind}: {last_error}",
                    _json({"error_class": error_class}),
                    updated_at,
                )
            )
            if not error.rendered:
                subject = html = text = ""
        elif status == EmailStatus.CANCELLED:
            if rng.random() < 0.5:
                send_at = created_at + timedelta(days=1 + rng.random() * 2)
            updated_at = created_at + timedelta(minutes=1 + rng.random() * 600)
        if template is not None and status not in (EmailStatus.SENT, EmailStatus.FAILED):
            # Template emails are rendered when they are sent; until then only the context.
            subject = html = text = ""
        return (
            email_id,
            self.client_id,
            batch_id,
            status,
            priority,
            "",
            _json(to),
            specs[0],
            _json(specs),
            tags,
            f'{{"user_id": {n}}}',
            template_id,
            version_id,
            context,
            subject,
            html,
            text,
            send_at,
            next_attempt_at,
            attempts,
            self.max_attempts,
            last_error,
            error_class,
            error_group,
            email_job_id(email_id),
            provider,
            message_id,
            sent_at,
            created_at,
            updated_at,
        )


SEED_TEMPLATES = (
    {
        "slug": "seed-welcome",
        "name": "Welcome (seed)",
        "subject": "Welcome to {{ company_name }}, {{ name }}!",
        "html": "<p>Hi {{ name }}, welcome to {{ company_name }}.</p>",
        "text": "Hi {{ name }}, welcome to {{ company_name }}.",
        "variables": ["name", "company_name"],
        "sample_context": {"name": "Ada", "company_name": "Acme"},
    },
    {
        "slug": "seed-order-confirmation",
        "name": "Order confirmation (seed)",
        "subject": "Your order {{ order_number }} is confirmed",
        "html": "<p>Hi {{ name }}, we received order {{ order_number }}.</p>",
        "text": "Hi {{ name }}, we received order {{ order_number }}.",
        "variables": ["name", "order_number"],
        "sample_context": {"name": "Ada", "order_number": "A-1042"},
    },
    {
        "slug": "seed-password-reset",
        "name": "Password reset (seed)",
        "subject": "Reset your password, {{ name }}",
        "html": "<p>Hi {{ name }}, <a href='{{ reset_url }}'>reset your password</a>.</p>",
        "text": "Hi {{ name }}, reset your password: {{ reset_url }}",
        "variables": ["name", "reset_url"],
        "sample_context": {"name": "Ada", "reset_url": "https://acme.test/reset/abc"},
    },
)
MAX_SEED_TEMPLATES = 6


def seed_templates() -> list[SeedTemplate]:
    """Up to a few existing templates (creating three if there are none), subjects pre-rendered."""
    templates = list(EmailTemplate.objects.order_by("pk")[:MAX_SEED_TEMPLATES])
    if not templates:
        templates = [
            template_create(created_by="seed_emails", **definition) for definition in SEED_TEMPLATES
        ]
    current = {
        (version.template_id, version.number): version.pk
        for version in EmailTemplateVersion.objects.filter(template__in=templates)
    }
    seeded = []
    for template in templates:
        subjects, contexts = {}, {}
        for first in FIRST_NAMES:
            context = {**template.sample_context, "name": first}
            try:
                subject = render_part(source=template.subject, context=context, part="subject")
            except MailqueueError:
                subject = template.name
            subjects[first] = " ".join(subject.split())[:998]
            contexts[first] = _json(context)
        seeded.append(
            SeedTemplate(
                id=template.pk,
                version_id=current.get((template.pk, template.version)),
                subjects=subjects,
                contexts=contexts,
            )
        )
    return seeded


def tables_analyze() -> None:
    """Refresh the planner's statistics (and on PostgreSQL the visibility map) after the load."""
    tables = [EmailJob._meta.db_table, TrackingEvent._meta.db_table, Batch._meta.db_table]
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.execute("ANALYZE")
        elif connection.in_atomic_block:
            # VACUUM cannot run in a transaction (tests); ANALYZE alone still gives estimates.
            cursor.execute(f"ANALYZE {', '.join(tables)}")
        else:
            # VACUUM as autovacuum would after a bulk load: index-only scans (the admin's
            # counts) need the visibility map, or they read the heap for every row.
            cursor.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")


@dataclass
class SeedReport:
    """What a seeding run wrote and how fast."""

    emails: int
    events: int
    by_status: dict[str, int]
    insert_seconds: float
    total_seconds: float


def emails_seed(
    *,
    count: int,
    client_name: str = "seed",
    batch_size: int = 20_000,
    with_waiting: bool = False,
    random_seed: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> SeedReport:
    """Insert `count` realistic emails for `client_name`, `batch_size` per transaction."""
    if count < 1 or batch_size < 1:
        raise ValueError("count and batch_size must be positive.")
    client_row, _ = Client.objects.get_or_create(name=client_name)
    seeder = EmailSeeder(
        count=count,
        client=client_row,
        templates=seed_templates(),
        with_waiting=with_waiting,
        rng=random.Random(random_seed),
    )
    emails_writer, batches_writer, events_writer = (
        TableWriter(EmailJob, EMAIL_COLUMNS),
        TableWriter(Batch, BATCH_COLUMNS),
        TableWriter(TrackingEvent, EVENT_COLUMNS),
    )
    totals: dict[str, int] = {}
    events = 0
    began = time.monotonic()
    for start in range(0, count, batch_size):
        size = min(batch_size, count - start)
        chunk = Chunk()
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # Seed data can be made again: do not wait for the WAL flush at each commit.
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO off")
            # Rows are generated while PostgreSQL indexes the previous ones (two cores busy).
            emails_writer.write(seeder.emails(start, size, chunk))
            batches_writer.write(chunk.batches)
            events_writer.write(chunk.events)
        events += len(chunk.events)
        for status, number in chunk.counts.items():
            totals[status] = totals.get(status, 0) + number
        if progress is not None:
            progress(start + size, time.monotonic() - began)
    inserted = time.monotonic() - began
    tables_analyze()
    return SeedReport(
        emails=count,
        events=events,
        by_status=totals,
        insert_seconds=inserted,
        total_seconds=time.monotonic() - began,
    )
