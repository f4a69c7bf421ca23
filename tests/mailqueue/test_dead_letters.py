"""Failed emails are grouped by the shape of their error."""

import pytest

from mailqueue.models import EmailJob, EmailStatus
from mailqueue.services import email_create
from mailqueue.services.dead_letters import error_group_key, error_pattern
from tests.helpers import run_worker


def test_pattern_hides_addresses_ids_times_and_long_numbers_but_keeps_reply_codes():
    """Two errors that differ only in the recipient or a queue id read the same."""
    assert error_pattern("Recipients refused: bob@x.com: 550 5.1.1 No such user") == (
        "Recipients refused: <address>: 550 5.1.1 No such user"
    )
    assert error_pattern("451 4.3.0 queue 1234567 at 2026-11-22T20:00:00Z") == (
        "451 4.3.0 queue <n> at <time>"
    )


def test_group_key_separates_classes_and_codes():
    """Same class and shape: one group; another class or reply code: another group."""
    a = error_group_key(error_class="smtplib.X", message="a@b.com: 550 no")
    assert a == error_group_key(error_class="smtplib.X", message="c@d.org: 550 no")
    assert a != error_group_key(error_class="smtplib.Y", message="a@b.com: 550 no")
    assert a != error_group_key(error_class="smtplib.X", message="a@b.com: 551 no")


@pytest.mark.django_db
def test_permanent_failures_of_different_recipients_share_a_group(
    issued_key, smtp_sink, django_capture_on_commit_callbacks
):
    """Two emails refused with the same reason land in one dead-letter group."""
    for address in ("gone1@example.com", "gone2@example.com"):
        smtp_sink.rcpt_replies[address] = "550 5.1.1 No such user"
    with django_capture_on_commit_callbacks(execute=True):
        for address in ("gone1@example.com", "gone2@example.com"):
            email_create(client=issued_key.api_key.client, to=[address], subject="Hi", text="Hello")

    run_worker()

    failed = list(EmailJob.objects.filter(status=EmailStatus.FAILED))
    assert len(failed) == 2
    assert {email.error_group for email in failed} == {failed[0].error_group}
    assert failed[0].error_group
    assert failed[0].error_class == "smtplib.SMTPRecipientsRefused"
