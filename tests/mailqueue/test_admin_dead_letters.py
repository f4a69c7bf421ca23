"""The dead-letters page: failed emails grouped by error, retried (or cancelled) per group."""

import re
import socket
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from mailqueue.models import Client, EmailJob, EmailStatus
from mailqueue.selectors.dead_letters import dead_letter_groups
from mailqueue.services import email_create, emails_deliver
from mailqueue.services.dead_letters import error_group_key
from tests.helpers import run_worker

pytestmark = pytest.mark.django_db

PAGE = "admin:mailqueue_emailjob_dead_letters"
CHANGELIST = "admin:mailqueue_emailjob_changelist"


def group_rows(page: str, css_class: str = "dead-letter-group") -> dict[str, str]:
    """Each group row's HTML by its group key."""
    return dict(
        re.findall(
            rf'<tr class="{css_class}" id="[^"]*" data-group="([^"]*)">(.*?)</tr>', page, re.S
        )
    )


def cells(row: str) -> list[str]:
    """The text of a row's cells."""
    return [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]


def messages_of(response) -> list[str]:
    """Flash messages shown after a POST."""
    return [str(message) for message in get_messages(response.wsgi_request)]


def failing_client(smtp_sink) -> Client:
    """Two emails refused with 550 for different recipients, one with 552: two groups."""
    client = Client.objects.create(name="shop")
    smtp_sink.rcpt_replies["gone1@example.com"] = "550 5.1.1 No such user"
    smtp_sink.rcpt_replies["gone2@example.com"] = "550 5.1.1 No such user"
    smtp_sink.rcpt_replies["full@example.com"] = "552 5.2.2 Mailbox full"
    ids = []
    for address in ("gone1@example.com", "gone2@example.com", "full@example.com"):
        ids.append(str(email_create(client=client, to=[address], subject="Hi", text="Hi").pk))
    assert emails_deliver(email_ids=ids).failed == 3
    return client


def test_failed_emails_are_grouped_by_error_with_counts_and_times(admin_client, smtp_sink):
    """Same class and reply, different recipients: one row counting 2, with first/last seen."""
    failing_client(smtp_sink)
    gone = EmailJob.objects.filter(recipient__startswith="gone")
    key = gone.first().error_group
    assert set(gone.values_list("error_group", flat=True)) == {key}

    response = admin_client.get(reverse(PAGE))
    assert response.status_code == 200
    rows = group_rows(response.content.decode())
    assert len(rows) == 2
    error_class, pattern, count, first_seen, last_seen, _ = cells(rows[key])
    assert error_class == "smtplib.SMTPRecipientsRefused"
    assert "&lt;address&gt;" in pattern
    assert "550 5.1.1 No such user" in pattern
    assert "gone1" not in pattern
    assert count == "2"
    times = sorted(gone.values_list("updated_at", flat=True))
    assert first_seen == f"{timezone.localtime(times[0]):%Y-%m-%d %H:%M}"
    assert last_seen == f"{timezone.localtime(times[1]):%Y-%m-%d %H:%M}"
    # Biggest group first.
    assert next(iter(rows)) == key

    groups = {group.key: group for group in dead_letter_groups()}
    assert (groups[key].count, groups[key].first_seen, groups[key].last_seen) == (2, *times)


def test_group_link_filters_the_email_list(admin_client, smtp_sink):
    """The count links to the failed emails of that group, and the list says which group."""
    failing_client(smtp_sink)
    key = EmailJob.objects.get(recipient="gone1@example.com").error_group
    page = admin_client.get(reverse(PAGE)).content.decode()
    link = f"{reverse(CHANGELIST)}?status__exact=failed&amp;error_group={key}"
    assert f'href="{link}"' in page

    response = admin_client.get(
        reverse(CHANGELIST), {"status__exact": "failed", "error_group": key}
    )
    assert response.status_code == 200
    assert {email.recipient for email in response.context["cl"].result_list} == {
        "gone1@example.com",
        "gone2@example.com",
    }
    assert "Showing the emails of the dead-letter group" in response.content.decode()
    # Other groups and other statuses stay out.
    other = admin_client.get(reverse(CHANGELIST), {"error_group": "0" * 32})
    assert list(other.context["cl"].result_list) == []


def test_retry_all_in_a_group_queues_them_and_they_are_sent_once_fixed(
    admin_client, smtp_sink, django_capture_on_commit_callbacks
):
    """Fix the cause, retry the group: both emails go out; the other group stays failed."""
    failing_client(smtp_sink)
    key = EmailJob.objects.get(recipient="gone1@example.com").error_group
    del smtp_sink.rcpt_replies["gone1@example.com"]
    del smtp_sink.rcpt_replies["gone2@example.com"]

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:mailqueue_emailjob_dead_letters_retry"),
            {"error_group": key},
            follow=True,
        )
    assert response.redirect_chain[-1][0] == reverse(PAGE)
    assert "Retried 2 email(s); skipped 0 that were not failed or cancelled." in messages_of(
        response
    )
    statuses = dict(EmailJob.objects.values_list("recipient", "status"))
    assert statuses == {
        "gone1@example.com": "queued",
        "gone2@example.com": "queued",
        "full@example.com": "failed",
    }
    # The page now shows only the other group.
    assert list(group_rows(response.content.decode())) != [key]
    assert key not in group_rows(response.content.decode())

    run_worker()
    assert set(
        EmailJob.objects.filter(recipient__startswith="gone").values_list("status", flat=True)
    ) == {"sent"}
    assert {to for message in smtp_sink.messages for to in message.rcpt_tos} == {
        "gone1@example.com",
        "gone2@example.com",
    }


def test_retry_all_reports_nothing_to_do_for_an_emptied_group(admin_client):
    """A group that no longer has failed emails: nothing retried, said as a warning."""
    response = admin_client.post(
        reverse("admin:mailqueue_emailjob_dead_letters_retry"),
        {"error_group": "f" * 32},
        follow=True,
    )
    assert "Retried 0 email(s); skipped 0 that were not failed or cancelled." in messages_of(
        response
    )
    assert (
        admin_client.get(reverse("admin:mailqueue_emailjob_dead_letters_retry")).status_code == 405
    )


def make_retrying(client: Client, address: str, message: str) -> EmailJob:
    """An email waiting for its next attempt after a transient error."""
    return EmailJob.objects.create(
        client=client,
        to=[address],
        recipient=address,
        status=EmailStatus.RETRYING,
        attempts=2,
        error_class="smtplib.SMTPServerDisconnected",
        # The worker stores the group key at every failed attempt (as delivery.py does).
        error_group=error_group_key(error_class="smtplib.SMTPServerDisconnected", message=message),
        last_error=message,
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )


def test_retrying_emails_are_grouped_and_a_group_can_be_cancelled(admin_client):
    """Retrying emails with the same error shape form one group; cancel stops all of them."""
    client = Client.objects.create(name="shop")
    first = make_retrying(
        client, "r1@example.com", "Connection to r1@example.com lost after 12345 ms"
    )
    second = make_retrying(
        client, "r2@example.com", "Connection to r2@example.com lost after 99999 ms"
    )
    other = make_retrying(client, "r3@example.com", "TLS handshake failed")
    key = error_group_key(error_class=first.error_class, message=first.last_error)

    page = admin_client.get(reverse(PAGE)).content.decode()
    assert "No failed emails." in page
    rows = group_rows(page, "retrying-group")
    assert len(rows) == 2
    assert cells(rows[key])[:3] == [
        "smtplib.SMTPServerDisconnected",
        "Connection to &lt;address&gt; lost after &lt;n&gt; ms",
        "2",
    ]

    response = admin_client.post(
        reverse("admin:mailqueue_emailjob_dead_letters_cancel"), {"error_group": key}, follow=True
    )
    assert (
        "Cancelled 2 email(s); skipped 0 that were not scheduled, queued or retrying."
        in messages_of(response)
    )
    statuses = dict(EmailJob.objects.values_list("pk", "status"))
    assert (statuses[first.pk], statuses[second.pk], statuses[other.pk]) == (
        "cancelled",
        "cancelled",
        "retrying",
    )


def test_emails_waiting_for_an_open_circuit_can_be_cancelled_as_a_group(admin_client, settings):
    """Emails deferred because every provider's circuit is open form a retrying group, and
    "cancel all in this group" reaches them (the group shown is the key stored with the error)."""
    settings.EMAIL_PROVIDERS = ["smtp"]
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings.MAILQUEUE_SMTP = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": port}
    settings.MAILQUEUE_BREAKER_FAILURES = 1  # the first failure opens the circuit
    settings.MAILQUEUE_WORKER_CONCURRENCY = 1  # the later emails meet the open circuit
    client = Client.objects.create(name="shop")
    emails = [
        email_create(client=client, to=[f"wait{n}@example.com"], subject="Hi", text="Hi")
        for n in range(3)
    ]
    emails_deliver(email_ids=[str(email.pk) for email in emails])
    waiting = EmailJob.objects.filter(attempts=0, status=EmailStatus.RETRYING)
    assert waiting.count() == 2
    key = waiting.first().error_group
    assert key

    page = admin_client.get(reverse(PAGE)).content.decode()
    assert "circuit is open" in cells(group_rows(page, "retrying-group")[key])[1]
    response = admin_client.post(
        reverse("admin:mailqueue_emailjob_dead_letters_cancel"), {"error_group": key}, follow=True
    )

    assert (
        "Cancelled 2 email(s); skipped 0 that were not scheduled, queued or retrying."
        in messages_of(response)
    )
    assert EmailJob.objects.filter(status=EmailStatus.CANCELLED).count() == 2


def test_dead_letters_page_queries_do_not_grow_with_groups(
    admin_client, django_assert_max_num_queries
):
    """Two queries for the failed groups however many there are, one for the retrying ones."""
    client = Client.objects.create(name="many")
    for index in range(30):
        EmailJob.objects.create(
            client=client,
            to=[f"f{index}@example.com"],
            recipient=f"f{index}@example.com",
            status=EmailStatus.FAILED,
            error_class=f"Error{index % 10}",
            error_group=f"{index % 10:032d}",
            last_error=f"reason {index % 10}",
        )
        make_retrying(client, f"r{index}@example.com", f"reason {index % 7}")
    # Session, user, the two failed-group queries, the retrying rows; nothing per group.
    with django_assert_max_num_queries(6):
        response = admin_client.get(reverse(PAGE))
    assert len(group_rows(response.content.decode())) == 10
    assert len(group_rows(response.content.decode(), "retrying-group")) == 7


def test_view_only_staff_see_groups_but_cannot_act(client, smtp_sink):
    """Without the change permission there are no buttons, and POSTs are refused."""
    failing_client(smtp_sink)
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_emailjob"))
    client.login(username="viewer", password="pw")

    page = client.get(reverse(PAGE)).content.decode()
    assert len(group_rows(page)) == 2
    assert "Retry all in this group" not in page
    key = EmailJob.objects.get(recipient="gone1@example.com").error_group
    response = client.post(
        reverse("admin:mailqueue_emailjob_dead_letters_retry"), {"error_group": key}
    )
    assert response.status_code == 403
    assert EmailJob.objects.filter(status="failed").count() == 3


def test_dead_letters_is_linked_from_the_email_list_and_the_admin_home(admin_client):
    """Both the email list and the admin home link to the page."""
    url = reverse(PAGE)
    assert f'href="{url}"' in admin_client.get(reverse(CHANGELIST)).content.decode()
    assert f'href="{url}"' in admin_client.get(reverse("admin:index")).content.decode()
