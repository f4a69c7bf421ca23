"""One-time code services: what is stored, concurrent verifications, the GDPR selector, purge."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from mailqueue.models import EmailJob
from otp.checks import check_otp_options
from otp.models import OneTimeCode
from otp.selectors import codes_of_address
from otp.services import code_hash, codes_purge, otp_issue, otp_verify
from templates_app.models import EmailTemplate
from templates_app.services import template_check_context, template_render


def _issue(client, **fields) -> tuple[OneTimeCode, str]:
    """Issue a code through the service; return its row and the code (from its email's context)."""
    row = otp_issue(client=client, email="ada@example.com", **fields)
    return row, EmailJob.objects.get(pk=row.email_id).context["code"]


def test_only_a_keyed_hash_salted_with_the_row_is_stored(issued_key, verification_template):
    row, code = _issue(issued_key.api_key.client, length=8)

    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(t)::text FROM otp_codes AS t WHERE id = %s", [row.pk])
        stored = cursor.fetchone()[0]
    assert code not in stored
    assert row.code_hash == code_hash(code_id=row.pk, purpose="verification", code=code)
    assert row.code_hash != code_hash(code_id=row.pk, purpose="login", code=code)


def test_codes_are_random_digits(issued_key, verification_template, settings):
    settings.MAILQUEUE_OTP_RESEND_SECONDS = 0
    settings.MAILQUEUE_OTP_MAX_CODES_PER_HOUR = 100
    codes = {_issue(issued_key.api_key.client, length=8)[1] for _ in range(20)}

    assert len(codes) == 20
    assert all(code.isdigit() and len(code) == 8 for code in codes)


def test_the_default_template_renders_with_only_the_code_and_its_lifetime(verification_template):
    template = EmailTemplate.objects.get(slug="email-verification")
    context = {"code": "482913", "expires_in_minutes": 10}

    template_check_context(template=template, context=context)
    rendered = template_render(template=template, context=context)

    assert rendered.subject == "482913 is your verification code"
    assert "Hello," in rendered.text and "Hi ," not in rendered.text
    assert "482913" in rendered.html and "expires in 10 minutes" in rendered.text
    assert "  " not in rendered.subject


def _at_once(count: int, work) -> list:
    """Run `work` in `count` threads released together, each on its own database connection."""
    barrier = threading.Barrier(count)
    results: list = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(work())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.django_db(transaction=True)
def test_two_verifications_at_once_succeed_once(issued_key, verification_template):
    client = issued_key.api_key.client
    _, code = _issue(client)

    results = _at_once(2, lambda: otp_verify(client=client, email="ada@example.com", code=code))

    assert sorted(result.verified for result in results) == [False, True]
    assert [r.reason for r in results if not r.verified] == ["not_found"]


@pytest.mark.django_db(transaction=True)
def test_wrong_tries_at_once_are_all_counted(issued_key, verification_template):
    client = issued_key.api_key.client
    row, code = _issue(client)
    wrong = "0000000"  # a 7-digit try never matches a 6-digit code

    results = _at_once(5, lambda: otp_verify(client=client, email="ada@example.com", code=wrong))

    assert [result.reason for result in results] == ["invalid"] * 5
    row.refresh_from_db()
    assert row.failed_attempts == 5
    assert otp_verify(client=client, email="ada@example.com", code=code).reason == (
        "too_many_attempts"
    )


def test_codes_of_address_finds_every_clients_codes(issued_key, api_for, verification_template):
    row, _ = _issue(issued_key.api_key.client)
    otp_issue(client=issued_key.api_key.client, email="bob@example.com")

    assert list(codes_of_address(address="ADA@example.com")) == [row]


def test_purge_deletes_old_codes(issued_key, verification_template):
    _issue(issued_key.api_key.client)
    assert codes_purge() == 0
    OneTimeCode.objects.update(created_at=timezone.now() - timedelta(hours=25))

    assert codes_purge() == 1
    assert not OneTimeCode.objects.exists()


def test_an_unusable_option_stops_startup(settings):
    settings.MAILQUEUE_OTP_RESEND_SECONDS = "soon"

    errors = check_otp_options()

    assert [error.id for error in errors] == ["otp.E001"]
    assert "MAILQUEUE_OTP_RESEND_SECONDS" in errors[0].msg
