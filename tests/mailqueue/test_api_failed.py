"""The failed-email API: groups of failed emails, bulk retry and cancel, and `all_clients` keys."""

import io
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from mailqueue.models import ApiKey, Batch, Client, EmailJob, EmailStatus, Suppression
from mailqueue.services import api_key_create, email_create
from mailqueue.services.dead_letters import error_fields
from tests.helpers import run_worker
from tracking.models import EventType, TrackingEvent

pytestmark = pytest.mark.django_db

FAILED = "/api/v1/failed/"
RETRY = "/api/v1/failed/retry/"
CANCEL = "/api/v1/failed/cancel/"
REFUSED = ("smtplib.SMTPRecipientsRefused", "550 5.1.1 <{}>: No such user")
TIMEOUT = ("TimeoutError", "Connection timed out after 30000 ms")


def bearer(client_name: str, *, scopes=("admin",), all_clients: bool = False) -> APIClient:
    """An API client with a new key of this client."""
    issued = api_key_create(client_name=client_name, scopes=list(scopes), all_clients=all_clients)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    return api


def client_named(name: str) -> Client:
    """The client of that name (created if needed)."""
    return Client.objects.get_or_create(name=name)[0]


def make_email(
    client_name: str,
    to: str,
    *,
    status: str = EmailStatus.FAILED,
    error: tuple[str, str] = REFUSED,
    **columns,
) -> EmailJob:
    """An email accepted through the service, then left failed (or retrying) by `error`."""
    email = email_create(client=client_named(client_name), to=[to], subject="Hi", text="Hello")
    error_class, message = error
    EmailJob.objects.filter(pk=email.pk).update(
        status=status,
        attempts=5 if status == EmailStatus.FAILED else 2,
        next_attempt_at=timezone.now() + timedelta(minutes=5)
        if status == EmailStatus.RETRYING
        else None,
        **error_fields(error_class=error_class, message=message.format(to)),
        **columns,
    )
    email.refresh_from_db()
    return email


def statuses(*emails: EmailJob) -> list[str]:
    """The current status of each email."""
    current = dict(EmailJob.objects.values_list("pk", "status"))
    return [current[email.pk] for email in emails]


# --- GET /failed/ ------------------------------------------------------------------------------


def test_failed_emails_are_grouped_with_counts_samples_and_times():
    """Same error shape, different recipients: one group; the biggest group is listed first."""
    gone = [make_email("shop", f"gone{n}@example.com") for n in range(3)]
    slow = make_email("shop", "slow@example.com", error=TIMEOUT)
    make_email("shop", "waiting@example.com", status=EmailStatus.RETRYING)

    response = bearer("shop").get(FAILED)

    assert response.status_code == 200
    body = response.json()
    assert body["truncated"] is False
    assert [group["count"] for group in body["results"]] == [3, 1]
    refused, timeout = body["results"]
    assert set(refused) == {
        "error_group",
        "error_class",
        "sample_message",
        "count",
        "first_seen",
        "last_seen",
    }
    assert refused["error_group"] == gone[0].error_group
    assert refused["error_class"] == "smtplib.SMTPRecipientsRefused"
    assert refused["sample_message"] == "550 5.1.1 <<address>>: No such user"
    times = sorted(email.updated_at for email in gone)
    assert refused["first_seen"] == times[0].isoformat().replace("+00:00", "Z")
    assert refused["last_seen"] == times[-1].isoformat().replace("+00:00", "Z")
    assert timeout["error_group"] == slow.error_group
    assert timeout["sample_message"] == "Connection timed out after <n> ms"


def test_groups_are_capped_by_page_size():
    """`page_size` caps the groups listed, and `truncated` says more exist."""
    make_email("shop", "a@example.com")
    make_email("shop", "b@example.com", error=TIMEOUT)

    body = bearer("shop").get(FAILED, {"page_size": 1}).json()

    assert len(body["results"]) == 1
    assert body["truncated"] is True


def test_a_key_sees_only_its_own_clients_failed_emails_unless_all_clients():
    """Client isolation holds for `admin` keys; an `all_clients` key sees every client."""
    mine = make_email("shop", "a@example.com")
    make_email("bank", "b@example.com")
    make_email("bank", "c@example.com", error=TIMEOUT)

    own = bearer("shop").get(FAILED).json()["results"]
    every = bearer("shop", all_clients=True).get(FAILED).json()["results"]

    assert [(group["error_group"], group["count"]) for group in own] == [(mine.error_group, 1)]
    assert sorted(group["count"] for group in every) == [1, 2]


# --- POST /failed/retry/ -----------------------------------------------------------------------


def test_retry_queues_the_failed_emails_and_a_worker_sends_them(
    django_capture_on_commit_callbacks,
):
    """An empty body retries every failed email of the client; a worker then sends them."""
    failed = [make_email("shop", f"gone{n}@example.com") for n in range(3)]
    sent_before = make_email("shop", "ok@example.com", status=EmailStatus.SENT)

    with django_capture_on_commit_callbacks(execute=True):
        response = bearer("shop").post(RETRY, format="json")
    assert response.status_code == 200
    assert response.json() == {"retried": 3, "skipped": 0}
    for email in failed:
        email.refresh_from_db()
        assert (email.status, email.attempts, email.last_error, email.error_group) == (
            EmailStatus.QUEUED,
            0,
            "",
            "",
        )
    requeued = TrackingEvent.objects.filter(
        email__in=failed, event_type=EventType.QUEUED, description="Queued again by a retry."
    )
    assert requeued.count() == 3

    with django_capture_on_commit_callbacks(execute=True):
        run_worker()

    assert statuses(*failed, sent_before) == [EmailStatus.SENT] * 4


def test_retry_skips_emails_whose_every_recipient_is_suppressed():
    """Sending those again would only mark them suppressed: they stay failed, counted skipped."""
    suppressed = make_email("shop", "gone@example.com")
    retried = make_email("shop", "fine@example.com")
    Suppression.objects.create(address="gone@example.com", reason="hard_bounce")
    # An unsubscribe does not stop transactional email: that one is retried.
    unsubscribed = make_email("shop", "left@example.com")
    Suppression.objects.create(
        address="left@example.com", reason="unsubscribe", client=client_named("shop")
    )

    response = bearer("shop").post(RETRY, {}, format="json")

    assert response.json() == {"retried": 2, "skipped": 1}
    assert statuses(suppressed, retried, unsubscribed) == [
        EmailStatus.FAILED,
        EmailStatus.QUEUED,
        EmailStatus.QUEUED,
    ]
    assert not TrackingEvent.objects.filter(email=suppressed).exists()


def test_retry_touches_only_the_keys_client_unless_all_clients():
    """A key of shop never retries bank's emails; an `all_clients` key retries both."""
    shop = make_email("shop", "a@example.com")
    bank = make_email("bank", "b@example.com")

    assert bearer("shop").post(RETRY).json() == {"retried": 1, "skipped": 0}
    assert statuses(shop, bank) == [EmailStatus.QUEUED, EmailStatus.FAILED]

    assert bearer("shop", all_clients=True).post(RETRY).json() == {"retried": 1, "skipped": 0}
    assert statuses(bank) == [EmailStatus.QUEUED]


def test_retry_filters_by_error_group():
    """Only the named group is retried."""
    refused = make_email("shop", "a@example.com")
    timeout = make_email("shop", "b@example.com", error=TIMEOUT)

    answer = bearer("shop").post(RETRY, {"error_group": refused.error_group}, format="json")

    assert answer.json() == {"retried": 1, "skipped": 0}
    assert statuses(refused, timeout) == [EmailStatus.QUEUED, EmailStatus.FAILED]


def test_retry_filters_by_batch_and_another_clients_batch_matches_nothing(welcome_template):
    """A batch filter keeps to that batch; bank's batch id, given by shop, retries nothing."""
    shop_batch = Batch.objects.create(client=client_named("shop"), template=welcome_template)
    bank_batch = Batch.objects.create(client=client_named("bank"), template=welcome_template)
    in_batch = make_email("shop", "a@example.com", batch=shop_batch)
    alone = make_email("shop", "b@example.com")
    bank = make_email("bank", "c@example.com", batch=bank_batch)
    api = bearer("shop")

    assert api.post(RETRY, {"batch": str(bank_batch.pk)}, format="json").json() == {
        "retried": 0,
        "skipped": 0,
    }
    assert api.post(RETRY, {"batch": str(shop_batch.pk)}, format="json").json() == {
        "retried": 1,
        "skipped": 0,
    }
    assert statuses(in_batch, alone, bank) == [
        EmailStatus.QUEUED,
        EmailStatus.FAILED,
        EmailStatus.FAILED,
    ]


def test_retry_filters_by_template(welcome_template):
    """Only emails of the named template are retried; an unknown slug matches nothing."""
    templated = make_email("shop", "a@example.com", template=welcome_template)
    plain = make_email("shop", "b@example.com")
    api = bearer("shop")

    assert api.post(RETRY, {"template": "no-such"}, format="json").json()["retried"] == 0
    assert api.post(RETRY, {"template": "welcome"}, format="json").json()["retried"] == 1
    assert statuses(templated, plain) == [EmailStatus.QUEUED, EmailStatus.FAILED]


def test_retry_filters_by_creation_time():
    """`created_after` includes its instant, `created_before` excludes it."""
    now = timezone.now()
    old = make_email("shop", "old@example.com", created_at=now - timedelta(days=2))
    middle = make_email("shop", "mid@example.com", created_at=now - timedelta(days=1))
    new = make_email("shop", "new@example.com", created_at=now)
    window = {
        "created_after": (now - timedelta(days=1)).isoformat(),
        "created_before": now.isoformat(),
    }

    assert bearer("shop").post(RETRY, window, format="json").json()["retried"] == 1
    assert statuses(old, middle, new) == [
        EmailStatus.FAILED,
        EmailStatus.QUEUED,
        EmailStatus.FAILED,
    ]


# --- POST /failed/cancel/ ----------------------------------------------------------------------


def test_cancel_moves_only_retrying_emails_to_cancelled():
    """Failed and queued emails are not touched; each cancelled email gets its event."""
    retrying = [
        make_email("shop", f"r{n}@example.com", status=EmailStatus.RETRYING, error=TIMEOUT)
        for n in range(2)
    ]
    failed = make_email("shop", "f@example.com")
    queued = email_create(client=client_named("shop"), to=["q@example.com"], subject="s", text="t")
    bank = make_email("bank", "b@example.com", status=EmailStatus.RETRYING, error=TIMEOUT)

    response = bearer("shop").post(CANCEL, {"error_group": retrying[0].error_group}, format="json")

    assert response.status_code == 200
    assert response.json() == {"cancelled": 2, "skipped": 0}
    assert statuses(*retrying, failed, queued, bank) == [
        EmailStatus.CANCELLED,
        EmailStatus.CANCELLED,
        EmailStatus.FAILED,
        EmailStatus.QUEUED,
        EmailStatus.RETRYING,
    ]
    assert TrackingEvent.objects.filter(email__in=retrying, event_type="cancelled").count() == 2
    assert EmailJob.objects.get(pk=retrying[0].pk).next_attempt_at is None

    assert bearer("ops", all_clients=True).post(CANCEL).json() == {"cancelled": 1, "skipped": 0}
    assert statuses(bank) == [EmailStatus.CANCELLED]


# --- Scope and bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("get", FAILED), ("post", RETRY), ("post", CANCEL)])
def test_a_key_without_the_admin_scope_gets_403(method, path):
    """`send`, `read` and `templates` are not enough, even with all_clients."""
    failed = make_email("shop", "a@example.com")
    api = bearer("shop", scopes=("send", "read", "templates"), all_clients=True)

    response = getattr(api, method)(path, format="json")

    assert response.status_code == 403
    assert "admin" in response.json()["detail"]
    assert statuses(failed) == [EmailStatus.FAILED]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"batch": "not-a-uuid"}, "batch"),
        ({"batch": False}, "batch"),
        ({"template": "not a slug!"}, "template"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2026-01-01T00:00:00"}, "created_before"),
        ({"error_group": 5}, "error_group"),
        ({"status": "sent"}, "status"),
    ],
)
@pytest.mark.parametrize("path", [RETRY, CANCEL])
def test_a_bad_filter_is_a_400_naming_the_field(path, body, field):
    """Nothing is changed; the answer says which field was refused."""
    failed = make_email("shop", "a@example.com")

    response = bearer("shop").post(path, body, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert statuses(failed) == [EmailStatus.FAILED]


def test_a_bad_query_parameter_of_the_list_is_a_400_naming_it():
    """The list's filters are checked the same way."""
    api = bearer("shop")
    assert list(api.get(FAILED, {"page_size": 0}).json()) == ["page_size"]
    assert list(api.get(FAILED, {"batch": "x"}).json()) == ["batch"]


def test_unknown_batch_id_is_not_an_error():
    """A well-formed batch id nobody has matches nothing (no 404 that would leak existence)."""
    make_email("shop", "a@example.com")
    answer = bearer("shop").post(RETRY, {"batch": str(uuid.uuid4())}, format="json")
    assert (answer.status_code, answer.json()) == (200, {"retried": 0, "skipped": 0})


# --- all_clients: command and admin ------------------------------------------------------------


def test_create_api_key_all_clients_flag():
    """`--all-clients` makes a key that sees every client's failed emails; the default does not."""
    out = io.StringIO()
    call_command("create_api_key", "ops", "--scope", "admin", "--all-clients", stdout=out)
    call_command("create_api_key", "shop", "--scope", "admin", stdout=io.StringIO())
    make_email("bank", "b@example.com")

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {out.getvalue().strip().splitlines()[-1]}")
    assert api.get(FAILED).json()["results"][0]["count"] == 1
    assert dict(ApiKey.objects.values_list("client__name", "all_clients")) == {
        "ops": True,
        "shop": False,
    }


def test_admin_key_pages_show_and_change_all_clients(admin_client):
    """The change form has the checkbox, and saving it sets the flag."""
    key = api_key_create(client_name="ops", scopes=["admin"]).api_key
    url = reverse("admin:mailqueue_apikey_change", args=[key.pk])

    page = admin_client.get(url).content.decode()
    assert 'name="all_clients"' in page
    assert (
        'name="all_clients"'
        in admin_client.get(reverse("admin:mailqueue_apikey_add")).content.decode()
    )

    response = admin_client.post(
        url, {"name": "ops", "scopes": ["admin"], "is_active": "on", "all_clients": "on"}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.all_clients is True
