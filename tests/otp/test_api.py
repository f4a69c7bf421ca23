"""The one-time code API: issue a code by email, verify it once, and the limits around both."""

from datetime import timedelta

import pytest
from django.utils import timezone

from mailqueue.models import EmailJob, EmailStatus, Priority
from otp.models import OneTimeCode
from tests.otp.conftest import OTP_URL, VERIFY_URL


def verify(api, code: str, email: str = "ada@example.com", **body) -> dict:
    """POST /api/v1/otp/verify/ and return its 200 body."""
    response = api.post(VERIFY_URL, {"email": email, "code": code, **body}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_issued_code_arrives_at_high_priority_and_verifies_once(api, issue, deliver, smtp_sink):
    response = issue(email="Ada@Example.com")

    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body) == {"id", "expires_at"}
    row = OneTimeCode.objects.get(pk=body["id"])
    assert row.email.priority == Priority.HIGH
    [code] = deliver()
    assert len(code) == 6
    assert smtp_sink.messages[0].rcpt_tos == ["Ada@Example.com"]
    assert code not in response.content.decode()

    assert verify(api, code) == {"verified": True}
    # Verified once: there is no pending code for the address and purpose any more.
    assert verify(api, code) == {"verified": False, "reason": "not_found"}


def test_length_ttl_purpose_and_context_shape_the_code_and_its_email(
    api, issue, deliver, smtp_sink
):
    response = issue(length=4, ttl_seconds=120, purpose="login", context={"name": "Ada"})

    assert response.status_code == 202, response.content
    [code] = deliver()
    assert len(code) == 4
    text = smtp_sink.messages[0].message.get_body(preferencelist=("plain",)).get_content()
    assert "Hi Ada," in text
    assert "expires in 2 minutes" in text
    expires_at = OneTimeCode.objects.get().expires_at
    assert timedelta(seconds=115) < expires_at - timezone.now() <= timedelta(seconds=120)
    # A code verifies only for its purpose.
    assert verify(api, code) == {"verified": False, "reason": "not_found"}
    assert verify(api, code, purpose="login") == {"verified": True}


def test_wrong_codes_are_invalid_and_the_sixth_try_is_refused_even_if_right(api, issue, deliver):
    issue()
    [code] = deliver()
    wrong = "000000" if code != "000000" else "111111"

    for _ in range(5):
        assert verify(api, wrong) == {"verified": False, "reason": "invalid"}
    assert verify(api, code) == {"verified": False, "reason": "too_many_attempts"}
    assert OneTimeCode.objects.get().failed_attempts == 5


def test_an_expired_code_is_refused(api, issue, deliver):
    issue()
    [code] = deliver()
    OneTimeCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert verify(api, code) == {"verified": False, "reason": "expired"}


def test_unknown_address_or_purpose_is_not_found(api, issue, deliver):
    issue()
    [code] = deliver()

    assert verify(api, code, email="bob@example.com") == {"verified": False, "reason": "not_found"}
    assert verify(api, code, purpose="reset") == {"verified": False, "reason": "not_found"}


def test_another_client_cannot_verify_the_code(api, api_for, issue, deliver):
    issue()
    [code] = deliver()

    other = api_for("globex", ["send"])
    assert verify(other, code) == {"verified": False, "reason": "not_found"}
    assert verify(api, code) == {"verified": True}


def test_a_new_code_replaces_the_old_one_and_cancels_its_unsent_email(
    api, issue, deliver, settings
):
    settings.MAILQUEUE_OTP_RESEND_SECONDS = 0
    first = OneTimeCode.objects.get(pk=issue().json()["id"])
    second = OneTimeCode.objects.get(pk=issue().json()["id"])

    first.refresh_from_db()
    assert first.replaced_at is not None
    assert EmailJob.objects.get(pk=first.email_id).status == EmailStatus.CANCELLED
    [code] = deliver()
    assert EmailJob.objects.get(pk=second.email_id).status == EmailStatus.SENT

    third = issue()
    assert third.status_code == 202
    [new_code] = deliver()
    if new_code != code:
        assert verify(api, code) == {"verified": False, "reason": "invalid"}
    assert verify(api, new_code) == {"verified": True}


def test_a_resend_within_the_resend_window_is_429_with_retry_after(issue, settings):
    assert issue().status_code == 202

    response = issue()

    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 30
    assert "30 seconds" in response.json()["detail"]
    # Another purpose is another code; the window is per purpose.
    assert issue(purpose="login").status_code == 202
    OneTimeCode.objects.update(created_at=timezone.now() - timedelta(seconds=31))
    assert issue().status_code == 202
    settings.MAILQUEUE_OTP_RESEND_SECONDS = 120
    response = issue()
    assert response.status_code == 429
    assert 100 < int(response["Retry-After"]) <= 120


def test_the_sixth_code_for_an_address_within_an_hour_is_429(issue, settings):
    settings.MAILQUEUE_OTP_RESEND_SECONDS = 0
    for _ in range(5):
        assert issue().status_code == 202
    # An hour's limit counts every purpose.
    response = issue(purpose="login")

    assert response.status_code == 429
    assert 3500 < int(response["Retry-After"]) <= 3600
    assert issue(email="bob@example.com").status_code == 202
    # An hour after the first code, one more may go.
    first = OneTimeCode.objects.filter(address="ada@example.com").order_by("created_at").first()
    OneTimeCode.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert issue().status_code == 202
    settings.MAILQUEUE_OTP_MAX_CODES_PER_HOUR = 10
    assert issue().status_code == 202


@pytest.mark.parametrize(
    ("field", "value"),
    [("length", 3), ("length", 9), ("ttl_seconds", 59), ("ttl_seconds", 3601)],
)
def test_out_of_range_length_or_ttl_is_a_400_naming_the_field(issue, field, value):
    response = issue(**{field: value})

    assert response.status_code == 400
    assert set(response.json()) == {field}
    assert not OneTimeCode.objects.exists()


def test_bad_bodies_are_400s_naming_the_field(api, issue):
    assert set(issue(email="not an address").json()) == {"email"}
    assert set(issue(context=["a"]).json()) == {"context"}
    assert set(issue(codes=1).json()) == {"codes"}
    missing = issue(template="no-such-template")
    assert missing.status_code == 400
    assert "template" in missing.json()
    response = api.post(VERIFY_URL, {"email": "ada@example.com"}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"code"}


def test_both_endpoints_need_the_send_scope(api_for, verification_template):
    reader = api_for("acme", ["read"])

    issued = reader.post(OTP_URL, {"email": "ada@example.com"}, format="json")
    verified = reader.post(VERIFY_URL, {"email": "ada@example.com", "code": "1"}, format="json")

    assert issued.status_code == verified.status_code == 403
    assert "'send'" in issued.json()["detail"]
    assert not OneTimeCode.objects.exists()
