"""`Mailqueue`: one typed method per public endpoint of the service's /api/v1/, grouped by
resource (`client.emails.send(...)`, `client.topics.list()`, ...). Answers are the service's
JSON as plain dicts; list endpoints with cursors return a `Page` and have an `iterate` helper."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict, Unpack
from urllib.parse import parse_qs, quote, urlsplit

import requests

from mailqueue_client.transport import Retry, RetryPolicy, Transport, new_idempotency_key

JSON = dict[str, Any]
# Named once: inside a class with a `list` method, `list[...]` would name the method.
JSONList = list[JSON]
Addresses = str | Sequence[str]
Priority = Literal["high", "default", "low"]


class Attachment(TypedDict):
    """An attachment as the API takes it: base64 `content`; `content_id` makes it inline."""

    filename: str
    content: str
    mimetype: NotRequired[str]
    content_id: NotRequired[str]


def attachment(
    filename: str, content: bytes | str, mimetype: str | None = None, content_id: str | None = None
) -> Attachment:
    """An Attachment from raw bytes (text is UTF-8 encoded); `content_id` (no angle brackets)
    makes it an inline part the HTML shows with `<img src="cid:...">`."""
    raw = content.encode() if isinstance(content, str) else content
    item: Attachment = {"filename": filename, "content": base64.b64encode(raw).decode("ascii")}
    if mimetype:
        item["mimetype"] = mimetype
    if content_id:
        item["content_id"] = content_id
    return item


class BatchRecipient(TypedDict):
    """One recipient of a batch, with its own context merged over the batch's."""

    to: Addresses
    context: NotRequired[JSON]
    metadata: NotRequired[JSON]


class TemplateFields(TypedDict, total=False):
    """Fields of a template (POST/PUT/PATCH /templates/)."""

    slug: str
    name: str
    subject: str
    html: str
    text: str
    variables: list[str]
    sample_context: JSON
    is_active: bool
    track_opens: bool | None
    track_clicks: bool | None


class TopicFields(TypedDict, total=False):
    """Fields of a topic (POST/PUT/PATCH /topics/)."""

    slug: str
    name: str
    description: str
    template: str | None
    subject: str
    html: str
    text: str
    context: JSON
    double_opt_in: bool
    send_time: str
    timezone: str


class ScheduleFields(TypedDict, total=False):
    """Fields of a recurring send (POST/PATCH /schedules/): `topic` or `recipients`."""

    name: str
    topic: str | None
    recipients: list[str]
    template: str | None
    subject: str
    html: str
    text: str
    context: JSON
    cron: str
    timezone: str
    active: bool
    priority: Priority
    missed: Literal["run_once", "skip"]


class WebhookFields(TypedDict, total=False):
    """Changeable fields of a webhook endpoint (PATCH /webhooks/{id}/)."""

    url: str
    events: list[str]
    active: bool


class EventRuleFields(TypedDict, total=False):
    """Fields of an event-driven send rule (POST/PATCH /event-rules/)."""

    event_type: str
    template: str
    recipient_path: str
    context_path: str
    priority: Priority
    tags: list[str]
    secret_keys: list[str]


class FailedFilters(TypedDict, total=False):
    """Which failed emails a /failed/ call is about (all optional, combined with AND)."""

    error_group: str
    batch: str
    template: str
    created_after: dt.datetime | str
    created_before: dt.datetime | str


@dataclass
class Page:
    """One page of a cursor-paginated list, newest first."""

    results: list[JSON]
    next_cursor: str | None = None
    previous_cursor: str | None = None
    raw: JSON = field(default_factory=dict, repr=False)


def _cursor(url: str | None) -> str | None:
    """The `cursor` parameter of a next/previous link (the link's host may be the service's
    internal one behind a proxy, so only the cursor is reused)."""
    if not url:
        return None
    values = parse_qs(urlsplit(url).query).get("cursor")
    return values[0] if values else None


def _page(answer: JSON) -> Page:
    return Page(
        results=list(answer.get("results", [])),
        next_cursor=_cursor(answer.get("next")),
        previous_cursor=_cursor(answer.get("previous")),
        raw=answer,
    )


def _iterate(fetch: Callable[[str | None], Page]) -> Iterator[JSON]:
    """Every item of every page, following the cursors."""
    cursor = None
    while True:
        page = fetch(cursor)
        yield from page.results
        if not page.next_cursor:
            return
        cursor = page.next_cursor


def _list(value: Addresses | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _when(value: dt.datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _body(**fields: Any) -> JSON:
    """A request body without the arguments left at None (the service's defaults apply)."""
    return {name: value for name, value in fields.items() if value is not None}


def _seg(value: str) -> str:
    """A path segment, percent-encoded (addresses hold `@` and `+`)."""
    return quote(str(value), safe="@")


class _Resource:
    def __init__(self, transport: Transport) -> None:
        self._t = transport


class Emails(_Resource):
    """/emails/: send one email, read, list, retry and cancel."""

    def send(
        self,
        *,
        to: Addresses,
        subject: str | None = None,
        text: str | None = None,
        html: str | None = None,
        template: str | None = None,
        context: JSON | None = None,
        from_email: str | None = None,
        cc: Addresses | None = None,
        bcc: Addresses | None = None,
        reply_to: Addresses | None = None,
        headers: Mapping[str, str] | None = None,
        attachments: Sequence[Attachment] | None = None,
        priority: Priority | None = None,
        send_at: dt.datetime | str | None = None,
        tags: Sequence[str] | None = None,
        metadata: JSON | None = None,
        topic: str | None = None,
        transactional: bool | None = None,
        track_opens: bool | None = None,
        track_clicks: bool | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Accept an email (202): a `template` with its `context`, or a `subject` with `text`
        and/or `html`. Always sent with an Idempotency-Key (a new one unless given), so a
        retried request never sends twice. Returns the email (`id`, `status`, ...)."""
        body = _body(
            to=_list(to),
            cc=_list(cc),
            bcc=_list(bcc),
            reply_to=_list(reply_to),
            from_email=from_email,
            subject=subject,
            text=text,
            html=html,
            template=template,
            context=context,
            headers=dict(headers) if headers else None,
            attachments=list(attachments) if attachments else None,
            priority=priority,
            send_at=_when(send_at),
            tags=list(tags) if tags is not None else None,
            metadata=metadata,
            topic=topic,
            transactional=transactional,
            track_opens=track_opens,
            track_clicks=track_clicks,
        )
        return self._t.request(
            "POST", "emails/", body=body, idempotency_key=idempotency_key or new_idempotency_key()
        )

    def get(self, email_id: str) -> JSON:
        """One email with its `events` and `delivery_attempts`."""
        return self._t.request("GET", f"emails/{_seg(email_id)}/")

    def list(
        self,
        *,
        status: str | None = None,
        batch: str | None = None,
        to: str | None = None,
        tag: str | None = None,
        event: str | None = None,
        created_after: dt.datetime | str | None = None,
        created_before: dt.datetime | str | None = None,
        page_size: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        """One page of the client's emails, newest first, filtered."""
        params = _body(
            status=status,
            batch=batch,
            to=to,
            tag=tag,
            event=event,
            created_after=_when(created_after),
            created_before=_when(created_before),
            page_size=page_size,
            cursor=cursor,
        )
        return _page(self._t.request("GET", "emails/", params=params))

    def iterate(self, **filters: Any) -> Iterator[JSON]:
        """Every email matching the filters of `list`, page after page."""
        return _iterate(lambda cursor: self.list(**filters, cursor=cursor))

    def retry(self, email_id: str) -> JSON:
        """Queue a failed or cancelled email again (409 otherwise)."""
        return self._t.request("POST", f"emails/{_seg(email_id)}/retry/", retry=Retry.UNSAFE)

    def cancel(self, email_id: str) -> JSON:
        """Cancel a scheduled, queued or retrying email (409 once it is sending or sent)."""
        return self._t.request("POST", f"emails/{_seg(email_id)}/cancel/", retry=Retry.UNSAFE)


class Batches(_Resource):
    """/batches/: one template to many recipients."""

    def send(
        self,
        *,
        template: str,
        recipients: Sequence[BatchRecipient],
        context: JSON | None = None,
        from_email: str | None = None,
        priority: Priority | None = None,
        send_at: dt.datetime | str | None = None,
        tags: Sequence[str] | None = None,
        topic: str | None = None,
        transactional: bool | None = None,
        track_opens: bool | None = None,
        track_clicks: bool | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Accept a batch (202); each recipient's `context` is merged over the shared one.
        Sent with an Idempotency-Key like `emails.send`. Returns the batch with its counts."""
        items = [{**item, "to": _list(item["to"])} for item in recipients]
        body = _body(
            template=template,
            recipients=items,
            context=context,
            from_email=from_email,
            priority=priority,
            send_at=_when(send_at),
            tags=list(tags) if tags is not None else None,
            topic=topic,
            transactional=transactional,
            track_opens=track_opens,
            track_clicks=track_clicks,
        )
        return self._t.request(
            "POST", "batches/", body=body, idempotency_key=idempotency_key or new_idempotency_key()
        )

    def get(self, batch_id: str) -> JSON:
        """A batch with `status_counts` (every status, zero when none)."""
        return self._t.request("GET", f"batches/{_seg(batch_id)}/")


class Templates(_Resource):
    """/templates/ (shared by every client; writing needs the `templates` scope)."""

    def list(self) -> JSONList:
        """Every template."""
        return self._t.request("GET", "templates/")

    def get(self, slug: str) -> JSON:
        """One template."""
        return self._t.request("GET", f"templates/{_seg(slug)}/")

    def create(self, **fields: Unpack[TemplateFields]) -> JSON:
        """Create a template (`slug`, `name`, `subject` required)."""
        return self._t.request("POST", "templates/", body=fields, retry=Retry.UNSAFE)

    def replace(self, slug: str, **fields: Unpack[TemplateFields]) -> JSON:
        """Replace every field of a template (PUT)."""
        return self._t.request("PUT", f"templates/{_seg(slug)}/", body=fields)

    def update(self, slug: str, **fields: Unpack[TemplateFields]) -> JSON:
        """Change the given fields of a template (PATCH)."""
        return self._t.request("PATCH", f"templates/{_seg(slug)}/", body=fields)

    def delete(self, slug: str) -> None:
        """Delete a template no email used; one already used is deactivated instead."""
        self._t.request("DELETE", f"templates/{_seg(slug)}/")

    def render(self, slug: str, context: JSON | None = None) -> JSON:
        """The rendered `subject`, `html` and `text`; sends nothing."""
        return self._t.request(
            "POST", f"templates/{_seg(slug)}/render/", body={"context": context or {}}
        )

    def test_send(self, slug: str, to: str) -> JSON:
        """Send the template with its sample context to one address, at `high` priority."""
        return self._t.request(
            "POST", f"templates/{_seg(slug)}/test/", body={"to": to}, retry=Retry.UNSAFE
        )


class Suppressions(_Resource):
    """/suppressions/: addresses never sent to."""

    def list(
        self,
        *,
        reason: str | None = None,
        address: str | None = None,
        page_size: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        """One page of the client's entries and the service-wide ones."""
        params = _body(reason=reason, address=address, page_size=page_size, cursor=cursor)
        return _page(self._t.request("GET", "suppressions/", params=params))

    def iterate(self, **filters: Any) -> Iterator[JSON]:
        """Every entry matching the filters of `list`."""
        return _iterate(lambda cursor: self.list(**filters, cursor=cursor))

    def add(self, address: str, *, reason: str | None = None, topic: str | None = None) -> JSON:
        """Suppress an address for this client (`reason` defaults to `manual`)."""
        body = _body(address=address, reason=reason, topic=topic)
        return self._t.request("POST", "suppressions/", body=body)

    def remove(self, address: str, *, topic: str | None = None) -> None:
        """Remove the client's own entries for an address (only that topic's with `topic`)."""
        self._t.request("DELETE", f"suppressions/{_seg(address)}/", params={"topic": topic})


class Topics(_Resource):
    """/topics/: things recipients subscribe to."""

    def list(self, *, page_size: int | None = None, cursor: str | None = None) -> Page:
        """One page of the client's topics."""
        params = _body(page_size=page_size, cursor=cursor)
        return _page(self._t.request("GET", "topics/", params=params))

    def iterate(self, *, page_size: int | None = None) -> Iterator[JSON]:
        """Every topic of the client."""
        return _iterate(lambda cursor: self.list(page_size=page_size, cursor=cursor))

    def get(self, slug: str) -> JSON:
        """One topic."""
        return self._t.request("GET", f"topics/{_seg(slug)}/")

    def create(self, **fields: Unpack[TopicFields]) -> JSON:
        """Create a topic (`slug` and `name` required)."""
        return self._t.request("POST", "topics/", body=fields, retry=Retry.UNSAFE)

    def replace(self, slug: str, **fields: Unpack[TopicFields]) -> JSON:
        """Replace every field of a topic (PUT)."""
        return self._t.request("PUT", f"topics/{_seg(slug)}/", body=fields)

    def update(self, slug: str, **fields: Unpack[TopicFields]) -> JSON:
        """Change the given fields of a topic (PATCH)."""
        return self._t.request("PATCH", f"topics/{_seg(slug)}/", body=fields)

    def delete(self, slug: str) -> None:
        """Delete a topic."""
        self._t.request("DELETE", f"topics/{_seg(slug)}/")


class Subscribers(_Resource):
    """/topics/{slug}/subscribers/: who receives a topic."""

    def list(
        self,
        topic: str,
        *,
        status: str | None = None,
        page_size: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        """One page of a topic's subscribers (`status`: active, pending or unsubscribed)."""
        params = _body(status=status, page_size=page_size, cursor=cursor)
        return _page(self._t.request("GET", f"topics/{_seg(topic)}/subscribers/", params=params))

    def iterate(self, topic: str, **filters: Any) -> Iterator[JSON]:
        """Every subscriber of a topic matching the filters of `list`."""
        return _iterate(lambda cursor: self.list(topic, **filters, cursor=cursor))

    def get(self, topic: str, email: str) -> JSON:
        """One subscriber."""
        return self._t.request("GET", f"topics/{_seg(topic)}/subscribers/{_seg(email)}/")

    def subscribe(
        self,
        topic: str,
        email: str,
        *,
        context: JSON | None = None,
        frequency: str | None = None,
        resubscribe: bool | None = None,
    ) -> JSON:
        """Subscribe an address (idempotent: an existing subscriber is answered as it is).
        An address that unsubscribed needs `resubscribe=True` (409 otherwise)."""
        body = _body(email=email, context=context, frequency=frequency, resubscribe=resubscribe)
        return self._t.request("POST", f"topics/{_seg(topic)}/subscribers/", body=body)

    def unsubscribe(self, topic: str, email: str) -> None:
        """Mark a subscriber unsubscribed (the row is kept)."""
        self._t.request("DELETE", f"topics/{_seg(topic)}/subscribers/{_seg(email)}/")


class Schedules(_Resource):
    """/schedules/: recurring sends."""

    def list(self, *, page_size: int | None = None, cursor: str | None = None) -> Page:
        """One page of the client's schedules."""
        params = _body(page_size=page_size, cursor=cursor)
        return _page(self._t.request("GET", "schedules/", params=params))

    def iterate(self, *, page_size: int | None = None) -> Iterator[JSON]:
        """Every schedule of the client."""
        return _iterate(lambda cursor: self.list(page_size=page_size, cursor=cursor))

    def get(self, schedule_id: str) -> JSON:
        """One schedule with its `next_runs` and `last_run`."""
        return self._t.request("GET", f"schedules/{_seg(schedule_id)}/")

    def create(self, **fields: Unpack[ScheduleFields]) -> JSON:
        """Create a schedule (`cron`, and one of `topic` or `recipients`)."""
        return self._t.request("POST", "schedules/", body=fields, retry=Retry.UNSAFE)

    def update(self, schedule_id: str, **fields: Unpack[ScheduleFields]) -> JSON:
        """Change the given fields (PATCH); the next run is computed again from now."""
        return self._t.request("PATCH", f"schedules/{_seg(schedule_id)}/", body=fields)

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule."""
        self._t.request("DELETE", f"schedules/{_seg(schedule_id)}/")

    def pause(self, schedule_id: str) -> JSON:
        """Stop the schedule's runs."""
        return self._t.request("POST", f"schedules/{_seg(schedule_id)}/pause/")

    def resume(self, schedule_id: str) -> JSON:
        """Start the schedule again from its next tick."""
        return self._t.request("POST", f"schedules/{_seg(schedule_id)}/resume/")

    def run(self, schedule_id: str) -> JSON:
        """Run the schedule once now (202); the run's id is its batch's id."""
        return self._t.request("POST", f"schedules/{_seg(schedule_id)}/run/", retry=Retry.UNSAFE)


class Otp(_Resource):
    """/otp/: one-time codes. A 429 here is the answer (too soon, too many), never retried."""

    def send(
        self,
        email: str,
        *,
        purpose: str | None = None,
        length: int | None = None,
        ttl_seconds: int | None = None,
        template: str | None = None,
        context: JSON | None = None,
    ) -> JSON:
        """Email a new code to an address (202 with its `id` and `expires_at`, never the code)."""
        body = _body(
            email=email,
            purpose=purpose,
            length=length,
            ttl_seconds=ttl_seconds,
            template=template,
            context=context,
        )
        return self._t.request("POST", "otp/", body=body, retry=Retry.FINAL_429)

    def verify(self, email: str, code: str, *, purpose: str | None = None) -> JSON:
        """Check a code: `{"verified": true}` or `{"verified": false, "reason": ...}`."""
        body = _body(email=email, code=code, purpose=purpose)
        return self._t.request("POST", "otp/verify/", body=body, retry=Retry.FINAL_429)


class Queues(_Resource):
    """/queues/: queue control (scope `admin`)."""

    def list(self) -> JSON:
        """`{"queues": [...], "totals": {...}}`: counts, pause state and workers per queue."""
        return self._t.request("GET", "queues/")

    def pause(self, name: str) -> JSON:
        """Pause a queue (`high`, `default` or `low`): it accepts emails, sends none."""
        return self._t.request("POST", f"queues/{_seg(name)}/pause/")

    def resume(self, name: str) -> JSON:
        """Resume a queue; what waited is sent, oldest first."""
        return self._t.request("POST", f"queues/{_seg(name)}/resume/")


class Failed(_Resource):
    """/failed/: failed emails grouped by error, retried or cancelled in bulk (scope `admin`)."""

    def list(self, *, page_size: int | None = None, **filters: Unpack[FailedFilters]) -> JSON:
        """`{"results": [groups...], "truncated": bool}`, biggest group first."""
        params = _body(page_size=page_size, **{k: _when(v) for k, v in filters.items()})
        return self._t.request("GET", "failed/", params=params)

    def retry(self, **filters: Unpack[FailedFilters]) -> JSON:
        """Queue the matching failed emails again: `{"retried": n, "skipped": m}`."""
        body = {name: _when(value) for name, value in filters.items()}
        return self._t.request("POST", "failed/retry/", body=body, retry=Retry.UNSAFE)

    def cancel(self, **filters: Unpack[FailedFilters]) -> JSON:
        """Cancel the matching retrying emails: `{"cancelled": n, "skipped": m}`."""
        body = {name: _when(value) for name, value in filters.items()}
        return self._t.request("POST", "failed/cancel/", body=body, retry=Retry.UNSAFE)


class Webhooks(_Resource):
    """/webhooks/: endpoints that receive the client's email events."""

    def list(self) -> JSONList:
        """Every endpoint of the client."""
        return self._t.request("GET", "webhooks/")

    def get(self, endpoint_id: str) -> JSON:
        """One endpoint."""
        return self._t.request("GET", f"webhooks/{_seg(endpoint_id)}/")

    def create(self, url: str, events: Sequence[str]) -> JSON:
        """Register an endpoint; the answer's `secret` is shown only here."""
        body = {"url": url, "events": list(events)}
        return self._t.request("POST", "webhooks/", body=body, retry=Retry.UNSAFE)

    def update(self, endpoint_id: str, **fields: Unpack[WebhookFields]) -> JSON:
        """Change `url`, `events` or `active` (true again clears the failure count)."""
        return self._t.request("PATCH", f"webhooks/{_seg(endpoint_id)}/", body=fields)

    def delete(self, endpoint_id: str) -> None:
        """Delete an endpoint."""
        self._t.request("DELETE", f"webhooks/{_seg(endpoint_id)}/")


class EventRules(_Resource):
    """/event-rules/: which emails an event published to the service's stream makes."""

    def list(self) -> JSONList:
        """Every rule of the client."""
        return self._t.request("GET", "event-rules/")

    def get(self, rule_id: int) -> JSON:
        """One rule."""
        return self._t.request("GET", f"event-rules/{int(rule_id)}/")

    def create(self, **fields: Unpack[EventRuleFields]) -> JSON:
        """Create a rule (`event_type`, `template`, `recipient_path` required)."""
        return self._t.request("POST", "event-rules/", body=fields, retry=Retry.UNSAFE)

    def update(self, rule_id: int, **fields: Unpack[EventRuleFields]) -> JSON:
        """Change the given fields of a rule (PATCH)."""
        return self._t.request("PATCH", f"event-rules/{int(rule_id)}/", body=fields)

    def delete(self, rule_id: int) -> None:
        """Delete a rule."""
        self._t.request("DELETE", f"event-rules/{int(rule_id)}/")


class Mailqueue:
    """A client of one Mailqueue service, for one API key; safe to share between threads
    only if the given `session` is (one client per thread is the simple rule)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | tuple[float, float] = 10.0,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.transport = Transport(
            base_url=base_url, api_key=api_key, timeout=timeout, retry=retry, session=session
        )
        self.emails = Emails(self.transport)
        self.batches = Batches(self.transport)
        self.templates = Templates(self.transport)
        self.suppressions = Suppressions(self.transport)
        self.topics = Topics(self.transport)
        self.subscribers = Subscribers(self.transport)
        self.schedules = Schedules(self.transport)
        self.otp = Otp(self.transport)
        self.queues = Queues(self.transport)
        self.failed = Failed(self.transport)
        self.webhooks = Webhooks(self.transport)
        self.event_rules = EventRules(self.transport)

    def close(self) -> None:
        """Close the pooled connections."""
        self.transport.close()

    def __enter__(self) -> Mailqueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
