"""Writes of one-time codes: issue (and email) a code, verify one, purge old rows."""

import hashlib
import hmac
import math
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import salted_hmac

from mailqueue.errors import ValidationFailed
from mailqueue.models import ApiKey, Client, Priority
from mailqueue.services.emails import email_create, emails_cancel_many
from mailqueue.services.retention import delete_in_batches
from mailqueue.validation import address_spec
from otp import conf
from otp.errors import OtpRateLimited
from otp.models import OneTimeCode

LENGTH_RANGE = (4, 8)
TTL_RANGE = (60, 3600)
DEFAULT_PURPOSE = "verification"
# The context keys the service gives the template; `code` is the secret one.
CODE_KEY = "code"
MINUTES_KEY = "expires_in_minutes"
_HOUR = timedelta(hours=1)


class VerifyReason:
    """Why a verification failed (the `reason` the API answers)."""

    INVALID = "invalid"
    EXPIRED = "expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Verification:
    """The answer to a verification: verified, or the reason it was not."""

    verified: bool
    reason: str = ""


def code_hash(*, code_id: object, purpose: str, code: str) -> str:
    """HMAC-SHA256 of a code under a key derived from SECRET_KEY, salted with its row's id and
    purpose (the same code in two rows hashes differently)."""
    value = f"{code_id}:{purpose}:{code}"
    return salted_hmac("otp.OneTimeCode", value, algorithm="sha256").hexdigest()


def _check_range(value: int, bounds: tuple[int, int], field: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise ValidationFailed(f"Must be between {low} and {high}.", field=field)


def _lock_address(client: Client, address: str) -> None:
    """Serialize issuing for one client and address until the transaction ends, so two
    requests at once cannot both pass the limits."""
    if connection.vendor != "postgresql":
        return  # SQLite (`make run`) has one writer at a time anyway.
    digest = hashlib.sha256(f"otp:{client.pk}:{address}".encode()).digest()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], signed=True)]
        )


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def _check_limits(client: Client, address: str, purpose: str, now: datetime) -> None:
    """OtpRateLimited when the last code for this purpose is too recent, or the address had
    its hourly number of codes."""
    recent = OneTimeCode.objects.filter(client=client, address=address)
    seconds = conf.resend_seconds()
    resend = timedelta(seconds=seconds)
    last = recent.filter(purpose=purpose).order_by("-created_at").first()
    if last is not None and seconds and last.created_at > now - resend:
        raise OtpRateLimited(
            f"A code was sent to this address less than {seconds} seconds ago.",
            retry_after=_seconds_until(last.created_at + resend, now),
        )
    limit = conf.max_codes_per_hour()
    window = list(
        recent.filter(created_at__gt=now - _HOUR)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(window) >= limit:
        raise OtpRateLimited(
            f"This address was sent {limit} codes in the last hour.",
            retry_after=_seconds_until(window[-1] + _HOUR, now),
        )


@transaction.atomic
def otp_issue(
    *,
    client: Client,
    email: str,
    api_key: ApiKey | None = None,
    length: int = 6,
    ttl_seconds: int = 600,
    purpose: str = DEFAULT_PURPOSE,
    template: str | None = None,
    context: dict | None = None,
) -> OneTimeCode:
    """Make a random code for an address and purpose, replacing the previous one, and email it
    at `high` priority; only its hash is kept. OtpRateLimited when asked again too soon."""
    _check_range(length, LENGTH_RANGE, "length")
    _check_range(ttl_seconds, TTL_RANGE, "ttl_seconds")
    address = address_spec(email)
    now = timezone.now()
    _lock_address(client, address)
    _check_limits(client, address, purpose, now)
    replaced = OneTimeCode.objects.filter(
        client=client, address=address, purpose=purpose, verified_at=None, replaced_at=None
    )
    # The replaced code can no longer verify: its email is useless if it has not gone yet.
    unsent = [pk for pk in replaced.values_list("email_id", flat=True) if pk]
    replaced.update(replaced_at=now)
    if unsent:
        emails_cancel_many(email_ids=unsent)
    code = "".join(secrets.choice(string.digits) for _ in range(length))
    row = OneTimeCode(
        client=client,
        address=address,
        purpose=purpose,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    row.code_hash = code_hash(code_id=row.pk, purpose=purpose, code=code)
    row.email = email_create(
        client=client,
        api_key=api_key,
        to=[email],
        template=template or conf.default_template(),
        # The caller's context cannot override the code or its lifetime.
        context={**(context or {}), CODE_KEY: code, MINUTES_KEY: max(1, ttl_seconds // 60)},
        secret_context_keys=[CODE_KEY],
        priority=Priority.HIGH,
        tags=["otp"],
        metadata={"otp_id": str(row.pk), "otp_purpose": purpose},
        # A tracked link or pixel would only store more copies of the message.
        track_opens=False,
        track_clicks=False,
    )
    row.save(force_insert=True)
    return row


@transaction.atomic
def otp_verify(
    *, client: Client, email: str, code: str, purpose: str = DEFAULT_PURPOSE
) -> Verification:
    """Check a code against the address's newest code for this purpose; a code verifies once,
    and a code with MAILQUEUE_OTP_MAX_ATTEMPTS wrong tries verifies no more."""
    now = timezone.now()
    # Locked: of two verifications at once, the second sees what the first wrote (a used code
    # is no longer selected, a wrong try is counted), so none is lost and one code verifies once.
    row = (
        OneTimeCode.objects.select_for_update()
        .filter(
            client=client,
            address=address_spec(email),
            purpose=purpose,
            verified_at=None,
            replaced_at=None,
        )
        .order_by("-created_at")
        .first()
    )
    if row is None:
        return Verification(verified=False, reason=VerifyReason.NOT_FOUND)
    if row.expires_at <= now:
        return Verification(verified=False, reason=VerifyReason.EXPIRED)
    if row.failed_attempts >= conf.max_attempts():
        return Verification(verified=False, reason=VerifyReason.TOO_MANY_ATTEMPTS)
    given = code_hash(code_id=row.pk, purpose=purpose, code=code.strip())
    if hmac.compare_digest(given, row.code_hash):
        OneTimeCode.objects.filter(pk=row.pk).update(verified_at=now)
        return Verification(verified=True)
    OneTimeCode.objects.filter(pk=row.pk).update(failed_attempts=F("failed_attempts") + 1)
    return Verification(verified=False, reason=VerifyReason.INVALID)


def codes_purge(*, now: datetime | None = None, dry_run: bool = False) -> int:
    """Delete codes issued more than MAILQUEUE_OTP_KEEP_HOURS before `now`, in bounded
    batches; return how many (in a dry run, count them only)."""
    before = (now or timezone.now()) - timedelta(hours=conf.keep_hours())
    return delete_in_batches(OneTimeCode.objects.filter(created_at__lt=before), dry_run=dry_run)
