"""Email jobs and their attachments, batches, delivery attempts, API clients and keys,
idempotency records, captured messages. Writes go through `mailqueue.services`, reads through
`mailqueue.selectors`."""

import os
import secrets
import threading
import time
import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from mailqueue import conf, priorities

_uuid7_lock = threading.Lock()
_uuid7_last = (0, 0)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7), strictly increasing within this process.

    Email ids sort in the order the emails were accepted, so a drain claims the oldest queued
    emails with `ORDER BY id` on a small partial index. Python has no uuid7 before 3.14.
    """
    global _uuid7_last
    with _uuid7_lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_counter = _uuid7_last
        if millis <= last_millis:
            # Same millisecond (or the clock stepped back): count up within the last one.
            millis, counter = last_millis, last_counter + 1
            if counter > 0xFFF:
                millis, counter = last_millis + 1, 0
        else:
            counter = 0
        _uuid7_last = (millis, counter)
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76 | counter << 64
    value |= 0b10 << 62 | int.from_bytes(os.urandom(8)) & 0x3FFF_FFFF_FFFF_FFFF
    return uuid.UUID(int=value)


class Priority(models.TextChoices):
    """Priorities are RQ queue names, listed in the order workers drain them: `high`, `default`,
    `low` (code that lists the queues reads this order)."""

    HIGH = priorities.HIGH
    DEFAULT = priorities.DEFAULT
    LOW = priorities.LOW


class EmailStatus(models.TextChoices):
    """Lifecycle of an email. Only the services in `mailqueue/services/` move an email between
    these, each with a checked transition."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Every recipient is on the suppression list: no provider was contacted.
    SUPPRESSED = "suppressed"


class Client(models.Model):
    """A calling service; owns API keys, emails and batches."""

    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "api_clients"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A hashed API key `mq_<prefix>_<secret>`; only the prefix and a SHA-256 of it are stored."""

    class Scope(models.TextChoices):
        SEND = "send"
        READ = "read"
        TEMPLATES = "templates"
        # Operators: queue control (list, pause, resume) across every client, template test sends.
        ADMIN = "admin"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    # Email-level endpoints (the failed-email API) act on every client's emails, not only its own.
    all_clients = models.BooleanField(
        default=False,
        help_text="Operators only: email-level endpoints see every client's emails.",
    )
    # Test keys: their emails go the whole way through the pipeline to the `simulator` provider
    # (the capture inbox), never to a real one (like Postmark's test token).
    is_test = models.BooleanField(
        "test key",
        default=False,
        help_text="Emails sent with this key are captured, never delivered; simulator addresses "
        "(bounce@simulator.mailqueue, ...) produce their events.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "api_keys"
        ordering = ["client__name", "-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"mq_{self.prefix}_… ({self.client.name})"

    @property
    def is_authenticated(self) -> bool:
        """Let DRF's IsAuthenticated accept a key as the request's user."""
        return True


class Batch(models.Model):
    """Many emails sent together: one template to many recipients (one request), or one run of
    a recurring schedule (its template, or inline content rendered per recipient)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="batches")
    # Null for a schedule's run with inline content (each email stores what it renders to).
    template = models.ForeignKey(
        "templates_app.EmailTemplate",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="batches",
    )
    # The schedule whose run this batch is, and the tick it ran for.
    schedule = models.ForeignKey(
        "schedules.Schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="batches",
    )
    run_at = models.DateTimeField(null=True, blank=True)
    context = models.JSONField(default=dict, blank=True)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.DEFAULT)
    send_at = models.DateTimeField(null=True, blank=True)
    tags = models.JSONField(default=list, blank=True)
    count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "email_batches"
        ordering = ["-created_at"]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return f"Batch {self.id} ({self.count})"


class EmailJob(models.Model):
    """One email: what was asked, its rendered content, and where it is in its lifecycle."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # No single-column indexes on client, batch and template: the composite indexes below start
    # with them and serve the same lookups; each index costs every INSERT and status change.
    client = models.ForeignKey(
        Client, on_delete=models.PROTECT, related_name="emails", db_index=False
    )
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    batch = models.ForeignKey(
        Batch,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="emails",
        db_index=False,
    )
    status = models.CharField(max_length=10, choices=EmailStatus.choices)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.DEFAULT)

    from_email = models.CharField(max_length=320, blank=True, default="")
    to = models.JSONField(default=list)
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    reply_to = models.JSONField(default=list, blank=True)
    # First `to` address, lowercased: the admin's list column and its indexed search.
    recipient = models.CharField(max_length=320)
    # Every `to` address as a bare lowercase addr-spec: the API's `to` filter (GIN on PostgreSQL).
    to_addresses = models.JSONField(default=list)
    headers = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    template = models.ForeignKey(
        "templates_app.EmailTemplate",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="emails",
        db_index=False,
    )
    # The exact template content this email is rendered with (pinned when it is accepted).
    template_version = models.ForeignKey(
        "templates_app.EmailTemplateVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="emails",
    )
    context = models.JSONField(default=dict, blank=True)
    # Context keys whose values are secrets (a one-time code): masked wherever the email is shown
    # and in what is stored once it is sent; the values themselves go once it is final.
    secret_context_keys = models.JSONField(default=list, blank=True)
    # An admin user who created it (test sends, released captures); API sends have `api_key`.
    created_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Providers for this email only (e.g. a released capture); empty means EMAIL_PROVIDERS.
    providers = models.JSONField(default=list, blank=True)
    # Raw content for non-template sends; rendered content once sent (what went out).
    subject = models.CharField(max_length=998, blank=True, default="")
    html = models.TextField(blank=True, default="")
    text = models.TextField(blank=True, default="")

    send_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Set when a worker claims the email; only that worker may record the outcome.
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=conf.max_attempts)
    last_error = models.TextField(blank=True, default="")
    # Class of the last error and a fingerprint of (class, message shape): the dead-letter groups.
    error_class = models.CharField(max_length=200, blank=True, default="")
    error_group = models.CharField(max_length=64, blank=True, default="")
    rq_job_id = models.CharField(max_length=100, blank=True, default="")
    # The X-Request-ID of the API request that created the email, carried into worker log lines.
    request_id = models.CharField(max_length=200, blank=True, default="")

    # Non-transactional email (a topic, or transactional=False) carries the unsubscribe headers
    # and is stopped by unsubscribes; transactional email only by bounces, complaints, manual.
    topic = models.CharField(max_length=100, blank=True, default="")
    transactional = models.BooleanField(default=True)
    # Our own open/click tracking (resolved when accepted: request, template, then settings).
    track_opens = models.BooleanField(default=False)
    track_clicks = models.BooleanField(default=False)

    provider = models.CharField(max_length=50, blank=True, default="")
    message_id = models.CharField(max_length=998, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    # The first time each happened (from ESP webhooks or our own tracking), null when never.
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    bounced_at = models.DateTimeField(null=True, blank=True)
    complained_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "email_jobs"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="email_created"),
            # varchar_pattern_ops also serves the admin's prefix search (LIKE 'ada@%') on
            # PostgreSQL whatever the collation; other databases ignore the opclass.
            models.Index(
                fields=["recipient"], name="email_recipient", opclasses=["varchar_pattern_ops"]
            ),
            models.Index(fields=["status", "-created_at"], name="email_status_created"),
            models.Index(fields=["client", "-created_at"], name="email_client_created"),
            models.Index(fields=["batch", "status"], name="email_batch_status"),
            models.Index(fields=["status", "updated_at"], name="email_status_updated"),
            models.Index(fields=["template", "-created_at"], name="email_template_created"),
            models.Index(fields=["priority", "-created_at"], name="email_priority_created"),
            models.Index(
                fields=["error_group", "-updated_at"],
                name="email_failed_group",
                condition=models.Q(status="failed"),
            ),
            # What a drain claims: the oldest queued emails of one priority. Only queued rows
            # are in it, so it stays small however many emails are stored.
            models.Index(
                fields=["priority", "id"],
                name="email_queued_claim",
                condition=models.Q(status="queued"),
            ),
            # One dead-letter group's emails in the list's newest-first order.
            models.Index(
                fields=["error_group", "-created_at", "-id"],
                name="email_failed_group_created",
                condition=models.Q(status="failed"),
            ),
            # ESP webhooks find their emails by the provider's message id.
            models.Index(
                fields=["message_id"], name="email_message_id", condition=~models.Q(message_id="")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.recipient} [{self.status}]"


class EmailAttachment(models.Model):
    """A file attached to an email, kept out of `email_jobs` so list queries stay light."""

    email = models.ForeignKey(EmailJob, on_delete=models.CASCADE, related_name="attachments")
    filename = models.CharField(max_length=255)
    mimetype = models.CharField(max_length=255)
    content = models.BinaryField()
    # Set for an inline part (an image the HTML shows as `cid:<content_id>`); blank otherwise.
    content_id = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        db_table = "email_attachments"

    def __str__(self) -> str:
        return self.filename


class DeliveryAttempt(models.Model):
    """One try at handing an email to one provider; append-only."""

    class Outcome(models.TextChoices):
        SENT = "sent"
        TRANSIENT = "transient", "transient error"
        PERMANENT = "permanent", "permanent error"

    # No index of its own: `attempt_email_time` starts with it.
    email = models.ForeignKey(
        EmailJob, on_delete=models.CASCADE, related_name="delivery_attempts", db_index=False
    )
    number = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=50)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    error_class = models.CharField(max_length=200, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "email_attempts"
        ordering = ["started_at", "id"]
        indexes = [models.Index(fields=["email", "started_at"], name="attempt_email_time")]

    def __str__(self) -> str:
        return f"#{self.number} via {self.provider}: {self.outcome}"


class IdempotencyRecord(models.Model):
    """The first response to a request with an `Idempotency-Key`, replayed for repeats."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    response_location = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        db_table = "idempotency_keys"
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="idempotency_client_key")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return self.key


class CapturedMessage(models.Model):
    """A message delivered to the built-in `capture` provider: the exact MIME that would go out."""

    email = models.ForeignKey(
        EmailJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="captures"
    )
    message_id = models.CharField(max_length=998)
    from_email = models.CharField(max_length=320)
    to = models.JSONField(default=list)
    subject = models.CharField(max_length=998, blank=True, default="")
    mime = models.TextField()
    # The email that re-sent this message through a real provider ("release").
    released_as = models.ForeignKey(
        EmailJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "captured_messages"
        ordering = ["-created_at", "-id"]
        verbose_name = "captured message"
        verbose_name_plural = "capture inbox"

    def __str__(self) -> str:
        return self.subject or self.message_id


class SuppressionReason(models.TextChoices):
    """Why an address is not sent to."""

    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


class Suppression(models.Model):
    """An address Mailqueue must not send to.

    Hard bounces and complaints protect the reputation every client shares: they have no client
    and stop every client's email. Unsubscribes and manual entries belong to one client; an
    unsubscribe may name a topic (empty: everything non-transactional).
    """

    # A bare addr-spec, lowercased.
    address = models.CharField(max_length=320)
    reason = models.CharField(max_length=20, choices=SuppressionReason.choices)
    client = models.ForeignKey(
        Client, null=True, blank=True, on_delete=models.CASCADE, related_name="suppressions"
    )
    topic = models.CharField(max_length=100, blank=True, default="")
    source_event = models.ForeignKey(
        "tracking.TrackingEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "suppressions"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["address", "client", "topic", "reason"],
                condition=models.Q(client__isnull=False),
                name="suppression_unique_per_client",
            ),
            models.UniqueConstraint(
                fields=["address", "topic", "reason"],
                condition=models.Q(client__isnull=True),
                name="suppression_unique_service_wide",
            ),
        ]
        indexes = [
            # What a worker asks before sending: are any of these addresses suppressed?
            models.Index(fields=["address"], name="suppression_address"),
            models.Index(fields=["client", "-created_at"], name="suppression_client_created"),
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.reason})"


class DkimKey(models.Model):
    """A DKIM signing key kept in the admin: the `smtp` provider signs mail from `domain` with
    it (keys in MAILQUEUE_DKIM_KEYS take precedence for the same domain)."""

    domain = models.CharField(max_length=253, unique=True)
    selector = models.CharField(max_length=63, default="mailqueue")
    # PEM (PKCS#8 or PKCS#1) RSA private key; generated when added without one.
    private_key = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "dkim_keys"
        verbose_name = "DKIM key"
        ordering = ["domain"]

    def __str__(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


class QueuePause(models.Model):
    """A paused priority: workers claim nothing from it until the row is deleted (resume).

    Kept in PostgreSQL, not Redis, so a pause survives worker and Redis restarts; the claim
    statements read it in the same query that picks the emails.
    """

    priority = models.CharField(max_length=10, choices=Priority.choices, primary_key=True)
    paused_at = models.DateTimeField(auto_now_add=True)
    # Who paused it: "api:<key prefix> (<client>)" or "admin:<username>".
    paused_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        db_table = "queue_pauses"
        ordering = ["priority"]

    def __str__(self) -> str:
        return f"{self.priority} paused"


def sender_domain_token() -> str:
    """A new random verification token (the value of a sender domain's TXT record)."""
    return secrets.token_hex(16)


class SenderDomain(models.Model):
    """A domain a client may send from (its from_email and reply_to addresses), once verified.

    Several clients may claim the same domain; each verifies it for itself, by publishing its
    own token in DNS (see services.sender_domains) or through an operator.
    """

    class VerifiedBy(models.TextChoices):
        DNS = "dns", "DNS TXT record"
        OPERATOR = "operator", "operator"

    # No index of its own: the unique (client, domain) constraint starts with it.
    client = models.ForeignKey(
        Client, on_delete=models.CASCADE, related_name="sender_domains", db_index=False
    )
    # Lowercase ASCII (internationalized names as IDNA punycode), no trailing dot.
    domain = models.CharField(max_length=253)
    verification_token = models.CharField(
        max_length=64, default=sender_domain_token, editable=False
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_by = models.CharField(
        max_length=10, choices=VerifiedBy.choices, blank=True, default=""
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "sender_domains"
        ordering = ["domain", "id"]
        constraints = [
            models.UniqueConstraint(fields=["client", "domain"], name="sender_domain_client_domain")
        ]
        indexes = [models.Index(fields=["domain"], name="sender_domain_domain")]

    def __str__(self) -> str:
        return self.domain
