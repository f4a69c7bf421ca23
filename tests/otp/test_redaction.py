"""A one-time code is readable only in the message the recipient gets: never in what Mailqueue
stores about the email once it is sent (or failed, or cancelled), nor in what it shows before."""

from datetime import timedelta

from django.db import connection
from django.utils import timezone

from mailqueue.models import DeliveryAttempt, EmailJob, EmailStatus
from mailqueue.services.redaction import MASK
from mailqueue.services.sweeper import emails_sweep
from otp.models import OneTimeCode
from tests.helpers import run_worker
from tracking.models import TrackingEvent


def rows_text(email_id) -> str:
    """Every text and JSON column of the email's row, its events and its attempts, as text."""
    tables = {
        EmailJob._meta.db_table: "id",
        TrackingEvent._meta.db_table: "email_id",
        DeliveryAttempt._meta.db_table: "email_id",
    }
    found = []
    with connection.cursor() as cursor:
        for table, column in tables.items():
            cursor.execute(
                f"SELECT row_to_json(t)::text FROM {table} AS t WHERE {column} = %s", [email_id]
            )
            found += [row[0] for row in cursor.fetchall()]
    return "\n".join(found)


def issued_email(issue, **body) -> tuple[EmailJob, str]:
    """Issue a code; return its email and the code (read from the context the worker needs)."""
    row = OneTimeCode.objects.get(pk=issue(length=8, **body).json()["id"])
    email = EmailJob.objects.get(pk=row.email_id)
    return email, email.context["code"]


def test_after_the_send_no_stored_row_of_the_email_holds_the_code(issue, deliver):
    email, code = issued_email(issue)

    [received] = deliver()

    assert received == code
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT
    assert code not in rows_text(email.pk)
    assert email.context["code"] == MASK
    assert MASK in email.subject and MASK in email.html and MASK in email.text
    assert email.context["expires_in_minutes"] == 10


def test_a_retried_email_keeps_the_code_to_render_again_but_stores_it_nowhere_else(
    issue, smtp_sink, django_capture_on_commit_callbacks
):
    email, code = issued_email(issue)
    smtp_sink.data_replies = ["451 4.3.0 Try again later"]

    with django_capture_on_commit_callbacks(execute=True):
        run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.RETRYING
    assert email.context["code"] == code
    assert code not in rows_text(email.pk).replace(f'"code": "{code}"', "")


def test_a_failed_email_loses_the_code(issue, smtp_sink, django_capture_on_commit_callbacks):
    email, code = issued_email(issue)
    smtp_sink.rcpt_replies["ada@example.com"] = "550 5.1.1 No such user"

    with django_capture_on_commit_callbacks(execute=True):
        run_worker()

    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED
    assert code not in rows_text(email.pk)


def test_a_cancelled_email_loses_the_code(api, issue):
    email, code = issued_email(issue)

    response = api.post(f"/api/v1/emails/{email.pk}/cancel/")

    assert response.status_code == 200, response.content
    assert code not in rows_text(email.pk)


def test_before_the_send_the_api_and_the_admin_do_not_show_the_code(issue, api, admin_client):
    email, code = issued_email(issue)

    detail = api.get(f"/api/v1/emails/{email.pk}/")
    page = admin_client.get(f"/admin/mailqueue/emailjob/{email.pk}/change/")
    listing = admin_client.get("/admin/mailqueue/emailjob/")

    assert detail.status_code == page.status_code == listing.status_code == 200
    assert MASK in detail.json()["subject"]
    for response in (detail, page, listing):
        assert code not in response.content.decode()
    # The admin shows where the code goes, masked, in both the context and the preview.
    assert page.content.decode().count(MASK) >= 3


def test_an_email_the_sweeper_gives_up_on_loses_the_code(issue):
    """A worker died holding the last attempt of a code's email: the sweeper fails it, and the
    code goes from its context."""
    email, code = issued_email(issue)
    EmailJob.objects.filter(pk=email.pk).update(
        status=EmailStatus.SENDING,
        attempts=email.max_attempts - 1,
        lease_expires_at=timezone.now() - timedelta(minutes=1),
    )

    emails_sweep()

    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED
    assert email.context["code"] == MASK
    assert code not in rows_text(email.pk)


def test_a_final_code_email_is_never_retried_with_its_mask(
    issue, smtp_sink, api_for, django_capture_on_commit_callbacks
):
    """A failed code email lost its code: retrying it would send the mask, so the single retry
    answers 409 and a bulk retry counts it as skipped."""
    email, _ = issued_email(issue)
    smtp_sink.rcpt_replies["ada@example.com"] = "550 5.1.1 No such user"
    with django_capture_on_commit_callbacks(execute=True):
        run_worker()
    operator = api_for("acme", ["send", "admin"])

    single = operator.post(f"/api/v1/emails/{email.pk}/retry/")
    bulk = operator.post("/api/v1/failed/retry/", {}, format="json")

    assert single.status_code == 409
    assert bulk.json() == {"retried": 0, "skipped": 1}
    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED
