"""One-time codes: only a keyed hash of each code is stored, never the code."""

import uuid

from django.db import models

from mailqueue.models import Client, EmailJob


class OneTimeCode(models.Model):
    """A code sent to one address for one purpose; the newest one of a client, address and
    purpose is the only one that can verify, and only once."""

    # Made before the row is written: the code's hash is salted with it.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: `otp_latest` starts with it.
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+", db_index=False)
    # A bare addr-spec, lowercased.
    address = models.CharField(max_length=320)
    purpose = models.CharField(max_length=100)
    # HMAC-SHA256 of the code (see services.code_hash); the code itself is never stored.
    code_hash = models.CharField(max_length=64, editable=False)
    email = models.ForeignKey(
        EmailJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    # Wrong codes tried; at MAILQUEUE_OTP_MAX_ATTEMPTS the code verifies no more.
    failed_attempts = models.PositiveSmallIntegerField(default=0)
    verified_at = models.DateTimeField(null=True, blank=True)
    # A newer code for the same client, address and purpose was issued.
    replaced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "otp_codes"
        ordering = ["-created_at"]
        verbose_name = "one-time code"
        indexes = [
            # The code that verifies, the resend check and the hourly count.
            models.Index(fields=["client", "address", "-created_at"], name="otp_latest"),
            # Export and erasure find an address's codes.
            models.Index(fields=["address"], name="otp_address"),
            models.Index(fields=["created_at"], name="otp_created"),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} code for {self.address}"
