"""The admin: email list and detail, retry/cancel, API keys, templates, the capture inbox."""

import hashlib
import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.http import HttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_rq.settings import get_queues_map

from mailqueue.admin.helpers import EstimatedCountPaginator, pk_chunks, table_row_estimate
from mailqueue.models import (
    ApiKey,
    Batch,
    CapturedMessage,
    Client,
    DeliveryAttempt,
    EmailJob,
    EmailStatus,
)
from mailqueue.services import (
    api_key_authenticate,
    api_key_create,
    email_create,
    email_retry,
    emails_deliver,
)
from templates_app.models import EmailTemplate
from templates_app.services import template_create
from tracking.models import TrackingEvent

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:mailqueue_emailjob_changelist"
KEY_PATTERN = re.compile(r"mq_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def client_row(db) -> Client:
    """The client every email in these tests belongs to."""
    return Client.objects.create(name="billing")


@pytest.fixture
def greeting(db) -> EmailTemplate:
    """A template that needs `name`."""
    return template_create(
        slug="greeting",
        name="Greeting",
        subject="Hello {{ name }}",
        html="<p>Hi <b>{{ name }}</b></p>",
        text="Hi {{ name }}",
        variables=["name"],
        sample_context={"name": "Ada"},
    )


def make_email(
    client: Client, address: str, status: str = EmailStatus.QUEUED, **fields: object
) -> EmailJob:
    """An email row written directly, in whatever status the test needs."""
    fields.setdefault("subject", f"Subject for {address}")
    fields.setdefault("text", "Body")
    return EmailJob.objects.create(
        client=client, to=[address], recipient=address.lower(), status=status, **fields
    )


def listed(response: HttpResponse) -> set[uuid.UUID]:
    """The ids on a change list page."""
    assert response.status_code == 200, response.content[:500]
    return {row.pk for row in response.context["cl"].result_list}


def page_messages(response: HttpResponse) -> list[str]:
    """The flash messages shown on a page."""
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- Email list -------------------------------------------------------------------------------


def test_email_list_filters_and_search(admin_client, client_row, greeting):
    """Status, priority, template, batch and date filters, and the recipient/id search."""
    batch = Batch.objects.create(client=client_row, template=greeting, count=1)
    alice_failed = make_email(client_row, "alice@example.com", EmailStatus.FAILED, priority="high")
    alice_sent = make_email(client_row, "alice@example.com", EmailStatus.SENT, template=greeting)
    alicia = make_email(client_row, "alicia@example.org", batch=batch, template=greeting)
    bob = make_email(client_row, "bob@example.net", EmailStatus.FAILED, subject="")
    url = reverse(CHANGELIST)

    assert listed(admin_client.get(url)) == {alice_failed.pk, alice_sent.pk, alicia.pk, bob.pk}
    assert listed(admin_client.get(url, {"status__exact": "failed"})) == {alice_failed.pk, bob.pk}
    assert listed(admin_client.get(url, {"priority__exact": "high"})) == {alice_failed.pk}
    assert listed(admin_client.get(url, {"template": greeting.pk})) == {alice_sent.pk, alicia.pk}
    assert listed(admin_client.get(url, {"template": "none"})) == {alice_failed.pk, bob.pk}
    assert listed(admin_client.get(url, {"batch__id__exact": str(batch.pk)})) == {alicia.pk}
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    # The date filter's own "Today" link.
    in_range = {
        "created_at__gte": str(midnight),
        "created_at__lt": str(midnight + timedelta(days=1)),
    }
    assert len(listed(admin_client.get(url, in_range))) == 4

    # A whole address matches exactly, whatever its case; a fragment matches the start.
    assert listed(admin_client.get(url, {"q": " Alice@Example.COM "})) == {
        alice_failed.pk,
        alice_sent.pk,
    }
    assert listed(admin_client.get(url, {"q": "ALIC"})) == {
        alice_failed.pk,
        alice_sent.pk,
        alicia.pk,
    }
    assert listed(admin_client.get(url, {"q": "example.com"})) == set()
    assert listed(admin_client.get(url, {"q": str(bob.pk)})) == {bob.pk}

    page = admin_client.get(url).content.decode()
    assert "[greeting]" not in page  # both template emails have a subject
    assert "Subject for alice@example.com" in page


def test_email_list_does_not_count_a_big_table(admin_client, client_row, monkeypatch):
    """Unfiltered, the list uses PostgreSQL's estimate instead of COUNT(*) over the table."""
    for index in range(3):
        make_email(client_row, f"user{index}@example.com")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE email_jobs")
    # Pretend the table is big: any estimate above zero is trusted.
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_threshold", 0)

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse(CHANGELIST))
    assert len(listed(response)) == 3
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"] and "email_jobs" in q["sql"]]
    assert counts == []

    # Filtered lists are counted exactly.
    assert table_row_estimate(EmailJob.objects.filter(status="queued")) is None
    with CaptureQueriesContext(connection) as queries:
        listed(admin_client.get(reverse(CHANGELIST), {"status__exact": "queued"}))
    assert any("COUNT(" in q["sql"] for q in queries)


def test_email_list_queries_do_not_grow_with_rows(admin_client, client_row, greeting):
    """Template and client come in the list's one query, not one query per row."""
    other = Client.objects.create(name="shipping")

    def list_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            listed(admin_client.get(reverse(CHANGELIST)))
        return len(queries)

    make_email(client_row, "one@example.com", template=greeting)
    few = list_queries()
    for index in range(5):
        make_email(other if index % 2 else client_row, f"n{index}@example.com", template=greeting)
    assert list_queries() == few


@pytest.mark.parametrize(
    "name",
    [
        "mailqueue_batch",
        "mailqueue_client",
        "mailqueue_apikey",
        "mailqueue_capturedmessage",
        "templates_app_emailtemplate",
        "tracking_trackingevent",
    ],
)
def test_other_lists_load(admin_client, client_row, greeting, name):
    """Every list page answers with rows in it."""
    email = make_email(client_row, "l@example.com", EmailStatus.SENT)
    Batch.objects.create(client=client_row, template=greeting, count=0)
    api_key_create(client_name=client_row.name, scopes=["send"])
    CapturedMessage.objects.create(
        email=email, message_id="m@x", from_email="a@x", to=["l@example.com"], mime="Subject: x"
    )
    TrackingEvent.objects.create(email=email, event_type="sent", occurred_at=timezone.now())
    response = admin_client.get(reverse(f"admin:{name}_changelist"))
    assert len(listed(response)) == 1


# --- Email detail -----------------------------------------------------------------------------


def test_sent_email_detail_shows_content_sandboxed_with_attempts_and_events(
    admin_client, client_row
):
    """A delivered email: its HTML in a sandboxed iframe, its text, attempts and events."""
    email = email_create(
        client=client_row,
        to=["Carol <carol@example.com>"],
        cc=["dan@example.com"],
        subject="Your receipt",
        html='<p class="x">Paid &amp; done</p><script>alert("x")</script>',
        text="Paid & done",
        context={"order": 42},
        metadata={"order_id": "A-1"},
    )
    report = emails_deliver(email_ids=[str(email.pk)])
    assert report.sent == 1

    response = admin_client.get(reverse("admin:mailqueue_emailjob_change", args=[email.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert '<iframe sandbox=""' in page
    # The HTML is inside the srcdoc attribute, escaped: it never becomes part of the page.
    assert 'srcdoc="&lt;p class=&quot;x&quot;&gt;Paid &amp;amp; done&lt;/p&gt;' in page
    assert '<script>alert("x")</script>' not in page
    assert "Paid &amp; done</pre>" in page
    assert "Your receipt" in page
    assert "dan@example.com" in page
    assert "&quot;order_id&quot;: &quot;A-1&quot;" in page
    attempts = page.split('id="delivery_attempts-group"')[1].split('id="events-group"')[0]
    events = page.split('id="events-group"')[1]
    assert DeliveryAttempt.objects.filter(email=email).count() == 1
    assert re.search(r"<p>capture</p>", attempts)  # the attempt's provider
    assert re.search(r"<p>Sent</p>", attempts)  # its outcome
    assert TrackingEvent.objects.filter(email=email, event_type="sent").exists()
    assert re.search(r"<p>Sent</p>", events)
    # Read-only: no save button, and a POST cannot change anything.
    assert 'name="_save"' not in page
    post = admin_client.post(reverse("admin:mailqueue_emailjob_change", args=[email.pk]), {})
    assert post.status_code == 403


def test_unsent_template_email_detail_renders_a_preview(admin_client, client_row, greeting):
    """An email not sent yet is rendered from its template and context for the page."""
    email = make_email(
        client_row, "erin@example.com", template=greeting, context={"name": "Erin"}, subject=""
    )
    response = admin_client.get(reverse("admin:mailqueue_emailjob_change", args=[email.pk]))
    page = response.content.decode()
    assert "Not sent yet" in page
    assert "Hello Erin" in page
    assert 'srcdoc="&lt;p&gt;Hi &lt;b&gt;Erin&lt;/b&gt;&lt;/p&gt;"' in page

    listing = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "[greeting]" in listing  # no subject yet: the list names the template


def test_detail_shows_render_errors_instead_of_crashing(admin_client, client_row, greeting):
    """A template that fails at render time shows the error on the email's page."""
    EmailTemplate.objects.filter(pk=greeting.pk).update(text="{% for a, b in name %}{% endfor %}")
    email = make_email(client_row, "f@example.com", template=greeting, context={"name": "F"})
    response = admin_client.get(reverse("admin:mailqueue_emailjob_change", args=[email.pk]))
    assert response.status_code == 200
    assert "Cannot render this email: text:" in response.content.decode()


def test_detail_buttons_retry_and_cancel_one_email(admin_client, client_row):
    """Retry on a failed email queues it again; cancel on a sent one explains why not."""
    failed = make_email(client_row, "g@example.com", EmailStatus.FAILED, attempts=5)
    sent = make_email(client_row, "h@example.com", EmailStatus.SENT)
    retry_url = reverse("admin:mailqueue_emailjob_retry", args=[failed.pk])

    page = admin_client.get(reverse("admin:mailqueue_emailjob_change", args=[failed.pk]))
    assert f'action="{retry_url}"' in page.content.decode()
    assert admin_client.get(retry_url).status_code == 405

    response = admin_client.post(retry_url, follow=True)
    failed.refresh_from_db()
    assert failed.status == EmailStatus.QUEUED
    assert failed.attempts == 0
    assert "now queued" in " ".join(page_messages(response))

    response = admin_client.post(
        reverse("admin:mailqueue_emailjob_cancel", args=[sent.pk]), follow=True
    )
    sent.refresh_from_db()
    assert sent.status == EmailStatus.SENT
    assert "Cannot cancel an email that is sent" in response.content.decode()


# --- Bulk actions -----------------------------------------------------------------------------


def test_retry_and_cancel_actions_change_statuses_and_report_counts(admin_client, client_row):
    """Actions call the services and say how many emails they changed and skipped."""
    failed = [make_email(client_row, f"f{i}@example.com", EmailStatus.FAILED) for i in range(2)]
    cancelled = make_email(client_row, "c@example.com", EmailStatus.CANCELLED)
    sent = make_email(client_row, "s@example.com", EmailStatus.SENT)
    queued = make_email(client_row, "q@example.com", EmailStatus.QUEUED)
    everything = [*failed, cancelled, sent, queued]
    url = reverse(CHANGELIST)

    response = admin_client.post(
        url,
        {"action": "retry_selected", "_selected_action": [str(e.pk) for e in everything]},
        follow=True,
    )
    # Skipped emails are counted by the status that kept them from being retried.
    assert (
        "Retried 3 email(s); skipped 2 that were not failed or cancelled (1 queued, 1 sent)."
        in page_messages(response)
    )
    statuses = dict(EmailJob.objects.values_list("pk", "status"))
    assert [statuses[e.pk] for e in everything] == ["queued"] * 3 + ["sent", "queued"]

    # "Select all" across a filtered list: the action gets the filtered queryset.
    response = admin_client.post(
        f"{url}?status__exact=queued",
        {"action": "cancel_selected", "select_across": "1", "_selected_action": [str(queued.pk)]},
        follow=True,
    )
    assert (
        "Cancelled 4 email(s); skipped 0 that were not scheduled, queued or retrying."
        in page_messages(response)
    )
    assert EmailJob.objects.filter(status="cancelled").count() == 4
    assert EmailJob.objects.get(pk=sent.pk).status == EmailStatus.SENT


def test_retry_action_on_thousands_of_emails_runs_a_few_statements_per_chunk(
    admin_client, client_row, django_assert_max_num_queries
):
    """ "Select all" over 2,500 failed emails: set-based chunks of 1000, not a query per email."""
    EmailJob.objects.bulk_create(
        EmailJob(
            client=client_row,
            to=[f"bulk{i}@example.com"],
            recipient=f"bulk{i}@example.com",
            status=EmailStatus.FAILED if i % 10 else EmailStatus.SENT,
        )
        for i in range(2500)
    )
    any_pk = str(EmailJob.objects.values_list("pk", flat=True).first())
    with django_assert_max_num_queries(120):
        response = admin_client.post(
            reverse(CHANGELIST),
            {"action": "retry_selected", "select_across": "1", "_selected_action": [any_pk]},
            follow=True,
        )
    assert (
        "Retried 2250 email(s); skipped 250 that were not failed or cancelled (250 sent)."
        in page_messages(response)
    )
    assert EmailJob.objects.filter(status=EmailStatus.QUEUED).count() == 2250


def test_actions_walk_the_selection_by_key_while_it_changes(client_row):
    """Chunks page by key, so retried rows leaving a `status=failed` selection skip nothing."""
    emails = [make_email(client_row, f"k{i}@example.com", EmailStatus.FAILED) for i in range(7)]
    selection = EmailJob.objects.filter(status=EmailStatus.FAILED)
    seen = []
    for chunk in pk_chunks(selection, size=3):
        assert len(chunk) <= 3
        seen.extend(chunk)
        for pk in chunk:
            email_retry(email=EmailJob.objects.get(pk=pk))
    assert sorted(seen) == sorted(e.pk for e in emails)
    assert not EmailJob.objects.filter(status=EmailStatus.FAILED).exists()


# --- Batches ----------------------------------------------------------------------------------


def test_batch_detail_shows_status_counts_and_links_to_its_emails(
    admin_client, client_row, greeting
):
    """A batch page counts its emails per status and links to the filtered list."""
    batch = Batch.objects.create(client=client_row, template=greeting, count=3)
    for status in ("sent", "sent", "failed"):
        make_email(client_row, "b@example.com", status, batch=batch, template=greeting)
    page = admin_client.get(reverse("admin:mailqueue_batch_change", args=[batch.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert f"batch__id__exact={batch.pk}&amp;status__exact=sent" in html
    assert re.search(r">sent</a>: 2<", html)
    assert re.search(r">failed</a>: 1<", html)
    filtered = admin_client.get(reverse(CHANGELIST), {"batch__id__exact": str(batch.pk)})
    assert len(listed(filtered)) == 3
    assert "Showing the emails of batch" in filtered.content.decode()


# --- API keys ---------------------------------------------------------------------------------


def test_api_key_add_shows_the_key_once_and_stores_only_its_hash(admin_client, client_row):
    """The add form creates the key through the service; the plaintext appears once."""
    response = admin_client.post(
        reverse("admin:mailqueue_apikey_add"),
        {"client": client_row.pk, "name": "ci", "scopes": ["send", "read"], "_save": "Save"},
        follow=True,
    )
    assert response.status_code == 200
    found = KEY_PATTERN.findall(response.content.decode())
    assert len(found) == 1
    plaintext = found[0]

    api_key = ApiKey.objects.get()
    assert (api_key.client, api_key.name, api_key.scopes) == (client_row, "ci", ["read", "send"])
    secret = plaintext.split("_", 2)[2]
    assert api_key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert api_key_authenticate(token=plaintext) == api_key

    # Never again, and the hash is never displayed either.
    for url in (
        reverse("admin:mailqueue_apikey_changelist"),
        reverse("admin:mailqueue_apikey_change", args=[api_key.pk]),
    ):
        page = admin_client.get(url).content.decode()
        assert secret not in page
        assert api_key.key_hash not in page
        assert f"mq_{api_key.prefix}_…" in page


def test_api_key_form_requires_a_scope(admin_client, client_row):
    """A key without scopes is refused on the form."""
    response = admin_client.post(
        reverse("admin:mailqueue_apikey_add"), {"client": client_row.pk, "name": "x"}
    )
    assert response.status_code == 200
    assert "scopes" in response.context["adminform"].form.errors
    assert not ApiKey.objects.exists()


def test_api_key_edit_and_revoke(admin_client, client_row):
    """Scopes are edited in place; the revoke action stops the key from authenticating."""
    issued = api_key_create(client_name=client_row.name, scopes=["send"])
    change_url = reverse("admin:mailqueue_apikey_change", args=[issued.api_key.pk])
    response = admin_client.post(
        change_url, {"name": "renamed", "scopes": ["read", "templates"], "is_active": "on"}
    )
    assert response.status_code == 302
    api_key = ApiKey.objects.get()
    assert (api_key.name, api_key.scopes) == ("renamed", ["read", "templates"])

    response = admin_client.post(
        reverse("admin:mailqueue_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [str(api_key.pk)]},
        follow=True,
    )
    assert "Revoked 1 key(s)." in page_messages(response)
    assert api_key_authenticate(token=issued.plaintext) is None


# --- Templates --------------------------------------------------------------------------------


def template_form(**overrides) -> dict:
    """POST data for the template add form."""
    data = {
        "slug": "receipt",
        "name": "Receipt",
        "is_active": "on",
        "subject": "Receipt for {{ name }}",
        "html": "<p>Thanks {{ name }}</p>",
        "text": "Thanks {{ name }}",
        "variables": '["name"]',
        "sample_context": '{"name": "Ada"}',
        "_save": "Save",
    }
    return {**data, **overrides}


@pytest.mark.parametrize(
    ("field", "source", "message"),
    [
        ("html", "<p>{{ name|nosuchfilter }}</p>", "nosuchfilter"),
        ("text", "{% if name %}Hello", "endif"),
        ("subject", "Hi {% if %}{% endif %}", "line 1"),
    ],
)
def test_template_form_refuses_sources_that_do_not_compile(admin_client, field, source, message):
    """A syntax error or unknown filter is a form error on the field at fault; nothing is saved."""
    response = admin_client.post(
        reverse("admin:templates_app_emailtemplate_add"), template_form(**{field: source})
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert not EmailTemplate.objects.exists()


def test_template_form_reports_every_broken_part_at_once(admin_client):
    """Two broken parts: both fields carry their own error."""
    data = template_form(html="{{ name|nosuchfilter }}", text="{% if name %}Hello")
    response = admin_client.post(reverse("admin:templates_app_emailtemplate_add"), data)
    errors = response.context["adminform"].form.errors
    assert sorted(errors) == ["html", "text"]


def test_template_add_form_starts_with_empty_json(admin_client):
    """The JSON fields of a new template start as an empty list and object."""
    form = (
        admin_client.get(reverse("admin:templates_app_emailtemplate_add")).context["adminform"].form
    )
    assert (form["variables"].value(), form["sample_context"].value()) == ("[]", "{}")


def test_template_create_edit_and_preview(admin_client):
    """A valid template is saved through the services; its page previews it with the sample."""
    response = admin_client.post(reverse("admin:templates_app_emailtemplate_add"), template_form())
    assert response.status_code == 302
    template = EmailTemplate.objects.get(slug="receipt")
    assert template.variables == ["name"]
    assert template.sample_context == {"name": "Ada"}

    change_url = reverse("admin:templates_app_emailtemplate_change", args=[template.pk])
    page = admin_client.get(change_url).content.decode()
    assert "Receipt for Ada" in page
    assert '<iframe sandbox=""' in page
    assert 'srcdoc="&lt;p&gt;Thanks Ada&lt;/p&gt;"' in page
    assert "Thanks Ada</pre>" in page

    edit = template_form(subject="Your receipt, {{ name }}", sample_context='{"name": "Bo"}')
    del edit["slug"]  # read-only once created
    response = admin_client.post(change_url, edit)
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.subject == "Your receipt, {{ name }}"
    assert "Your receipt, Bo" in admin_client.get(change_url).content.decode()

    # An edit that breaks the template is refused too.
    response = admin_client.post(change_url, {**edit, "text": "{{ name|nosuchfilter }}"})
    assert response.status_code == 200
    assert "nosuchfilter" in response.context["adminform"].form.errors["text"][0]
    template.refresh_from_db()
    assert template.text == "Thanks {{ name }}"


def test_template_preview_warns_about_an_incomplete_sample(admin_client, greeting):
    """A sample context without a required variable is pointed out above the preview."""
    EmailTemplate.objects.filter(pk=greeting.pk).update(sample_context={})
    url = reverse("admin:templates_app_emailtemplate_change", args=[greeting.pk])
    page = admin_client.get(url).content.decode()
    assert "The sample context is incomplete" in page
    assert "Hello" in page


# --- Capture inbox ----------------------------------------------------------------------------


def test_capture_inbox_lists_searches_and_shows_a_message(admin_client, client_row):
    """A captured message: decoded headers, text, HTML sandboxed, and the raw MIME."""
    email = email_create(
        client=client_row,
        to=["Zoe <zoe@example.com>"],
        subject="Café ready",
        html='<h1 onclick="x()">Ready</h1>',
        text="Your table is ready.",
    )
    emails_deliver(email_ids=[str(email.pk)])
    captured = CapturedMessage.objects.get()
    inbox = reverse("admin:mailqueue_capturedmessage_changelist")

    assert listed(admin_client.get(inbox, {"q": "zoe@"})) == {captured.pk}
    assert listed(admin_client.get(inbox, {"q": "ready"})) == {captured.pk}
    assert "Café ready" in admin_client.get(inbox).content.decode()
    assert listed(admin_client.get(inbox, {"q": "nobody"})) == set()

    response = admin_client.get(
        reverse("admin:mailqueue_capturedmessage_change", args=[captured.pk])
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "<th>Subject</th><td>Café ready</td>" in page  # decoded from RFC 2047
    assert "Your table is ready.</pre>" in page
    assert '<iframe sandbox=""' in page
    assert 'srcdoc="&lt;h1 onclick=&quot;x()&quot;&gt;Ready&lt;/h1&gt;' in page
    assert '<h1 onclick="x()">' not in page
    assert "Content-Type: multipart/alternative" in page  # the raw MIME
    assert reverse("admin:mailqueue_emailjob_change", args=[email.pk]) in page
    assert admin_client.get(reverse("admin:mailqueue_capturedmessage_add")).status_code == 403


def captured_message(client: Client) -> CapturedMessage:
    """A message the capture provider kept."""
    email = email_create(client=client, to=["yan@example.com"], subject="Hi Yan", text="Hello")
    emails_deliver(email_ids=[str(email.pk)])
    return CapturedMessage.objects.get(email=email)


def test_capture_release_sends_a_new_email_through_the_real_provider(
    admin_client, admin_user, client_row, settings
):
    """The release button queues a copy for the release providers and links to it."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_RELEASE_PROVIDERS = ["console"]
    captured = captured_message(client_row)
    detail_url = reverse("admin:mailqueue_capturedmessage_change", args=[captured.pk])
    release_url = reverse("admin:mailqueue_capturedmessage_release", args=[captured.pk])

    page = admin_client.get(detail_url).content.decode()
    assert f'<form method="post" action="{release_url}">' in page
    assert 'id="capture-release-button"' in page
    assert admin_client.get(release_url).status_code == 405

    response = admin_client.post(release_url, follow=True)
    released = EmailJob.objects.exclude(pk=captured.email_id).get()
    assert released.providers == ["console"]
    assert released.created_by_user == admin_user
    assert (released.subject, released.text, released.to) == (
        "Hi Yan",
        "Hello",
        ["yan@example.com"],
    )
    assert released.status == EmailStatus.QUEUED
    email_url = reverse("admin:mailqueue_emailjob_change", args=[released.pk])
    assert f'Released: queued as <a href="{email_url}">' in response.content.decode()
    # The message now says where it went.
    assert f'<a class="released-as" href="{email_url}">{released.pk}</a>' in (
        admin_client.get(detail_url).content.decode()
    )


def test_capture_release_without_a_real_provider_shows_why(admin_client, client_row, settings):
    """With only the capture provider configured, releasing explains what to set."""
    settings.EMAIL_PROVIDERS = ["capture"]
    settings.MAILQUEUE_RELEASE_PROVIDERS = []
    captured = captured_message(client_row)

    response = admin_client.post(
        reverse("admin:mailqueue_capturedmessage_release", args=[captured.pk]), follow=True
    )
    assert "No real provider to release to" in " ".join(page_messages(response))
    assert EmailJob.objects.count() == 1
    captured.refresh_from_db()
    assert captured.released_as is None


# --- Other pages ------------------------------------------------------------------------------


def test_index_links_to_operations_pages(admin_client):
    """The admin home names the site and links to the queues, API docs and failed emails."""
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert "Mailqueue" in page
    assert 'href="/django-rq/"' in page
    assert 'href="/api/docs/"' in page
    assert f'href="{reverse(CHANGELIST)}?status__exact=failed"' in page


def test_tracking_events_list_is_read_only(admin_client, client_row):
    """Events are listed with a link to their email, filtered by type, never added."""
    email = make_email(client_row, "t@example.com", EmailStatus.SENT)
    TrackingEvent.objects.create(
        email=email, event_type="delivered", occurred_at=timezone.now(), provider="ses"
    )
    TrackingEvent.objects.create(email=email, event_type="opened", occurred_at=timezone.now())
    url = reverse("admin:tracking_trackingevent_changelist")
    response = admin_client.get(url, {"event_type__exact": "delivered"})
    assert len(listed(response)) == 1
    assert reverse("admin:mailqueue_emailjob_change", args=[email.pk]) in response.content.decode()
    assert admin_client.get(reverse("admin:tracking_trackingevent_add")).status_code == 403


def test_capture_with_an_unknown_charset_still_shows(admin_client, db):
    """A captured message whose charset Python does not know is shown, not a 500."""
    mime = (
        "From: a@example.com\nTo: b@example.com\nSubject: Odd\nMIME-Version: 1.0\n"
        'Content-Type: text/plain; charset="x-unknown"\n\nHello odd charset\n'
    )
    captured = CapturedMessage.objects.create(
        message_id="odd@example.com", from_email="a@example.com", to=["b@example.com"], mime=mime
    )

    response = admin_client.get(
        reverse("admin:mailqueue_capturedmessage_change", args=[captured.pk])
    )

    assert response.status_code == 200
    assert "Hello odd charset" in response.content.decode()


def test_detail_links_the_rq_job_to_the_queues_dashboard(admin_client, client_row):
    """The email's RQ job id opens that job in django-rq (on the queue of its priority)."""
    email = make_email(client_row, "job@example.com", priority="high", rq_job_id="email-abc123")

    page = admin_client.get(reverse("admin:mailqueue_emailjob_change", args=[email.pk]))

    job_url = reverse("django_rq:job_detail", args=[get_queues_map()["high"], "email-abc123"])
    assert f'href="{job_url}"' in page.content.decode()


def test_batch_search_finds_a_batch_by_its_id_only(admin_client, client_row, greeting):
    """A batch id finds that batch; any other text finds none (the id is the only index)."""
    batch = Batch.objects.create(client=client_row, template=greeting, count=0)
    other = Batch.objects.create(client=client_row, template=greeting, count=0)
    url = reverse("admin:mailqueue_batch_changelist")

    assert listed(admin_client.get(url)) == {batch.pk, other.pk}
    assert listed(admin_client.get(url, {"q": f" {batch.pk} "})) == {batch.pk}
    assert listed(admin_client.get(url, {"q": "billing"})) == set()


def test_django_rq_queues_open_inside_the_mailqueue_admin(admin_client):
    """django-rq's queue statistics are a page of the admin site, titled like the others."""
    response = admin_client.get(reverse("admin:django_rq_dashboard_changelist"))

    assert response.status_code == 200
    page = response.content.decode()
    assert f'<a href="{reverse("admin:index")}">Mailqueue</a>' in page
    for queue in ("high", "default", "low"):
        assert queue in page
