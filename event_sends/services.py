"""Writes of event-driven sends: managing a client's rules, turning one event into its emails,
replaying or deleting dead letters, and purging old handled-event records."""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from event_sends import conf, streams
from event_sends.errors import EventRejected
from event_sends.models import EventRule, HandledEvent
from event_sends.selectors import event_rules_for_event
from mailqueue.errors import MailqueueError, TemplateRenderError, ValidationFailed
from mailqueue.models import Client, EmailJob, Priority
from mailqueue.scheduling import connection
from mailqueue.services.delivery import email_render
from mailqueue.services.emails import email_create
from mailqueue.services.retention import delete_in_batches
from mailqueue.validation import normalize_address_list
from templates_app.selectors import template_get_active

# `booking.confirmed`, `user.registered`, `order.status_changed`.
EVENT_TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
# `user.email`, `items.0.email`: identifiers (or list indexes) separated by dots.
PATH_PATTERN = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
# A context key a template names: `code`, `reset_url`.
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_EVENT_ID_LENGTH = HandledEvent._meta.get_field("event_id").max_length
MAX_TAGS = 50
MAX_TAG_LENGTH = 100
MAX_SECRET_KEYS = 20
RULE_FIELDS = (
    "event_type",
    "template",
    "recipient_path",
    "context_path",
    "priority",
    "tags",
    "secret_keys",
)


def event_rule_validate(**fields: Any) -> dict[str, Any]:
    """The rule fields given, checked (the template must exist and be active): ValidationFailed
    names the first bad one."""
    if "event_type" in fields and not EVENT_TYPE_PATTERN.match(str(fields["event_type"])):
        raise ValidationFailed(
            "Must be dot-separated names of letters, digits, _ or -, e.g. booking.confirmed.",
            field="event_type",
        )
    if "template" in fields:
        template_get_active(slug=str(fields["template"]), field="template")
    for name in ("recipient_path", "context_path"):
        value = fields.get(name)
        if value is None or (name == "context_path" and value == ""):
            continue
        if not PATH_PATTERN.match(str(value)):
            raise ValidationFailed(
                "Must be a dotted path of identifiers into the event's data, e.g. user.email.",
                field=name,
            )
    if "priority" in fields and fields["priority"] not in Priority.values:
        raise ValidationFailed(f"Must be one of {', '.join(Priority.values)}.", field="priority")
    if "tags" in fields:
        tags = fields["tags"]
        if not isinstance(tags, list) or len(tags) > MAX_TAGS:
            raise ValidationFailed(f"Must be a list of at most {MAX_TAGS} tags.", field="tags")
        if not all(isinstance(tag, str) and 0 < len(tag) <= MAX_TAG_LENGTH for tag in tags):
            raise ValidationFailed(
                f"Each tag must be a non-empty string of at most {MAX_TAG_LENGTH} characters.",
                field="tags",
            )
    if "secret_keys" in fields:
        keys = fields["secret_keys"]
        if not isinstance(keys, list) or len(keys) > MAX_SECRET_KEYS:
            raise ValidationFailed(
                f"Must be a list of at most {MAX_SECRET_KEYS} context keys.", field="secret_keys"
            )
        if not all(isinstance(key, str) and IDENTIFIER_PATTERN.match(key) for key in keys):
            raise ValidationFailed(
                "Each secret key must be a context key name (letters, digits and _), e.g. code.",
                field="secret_keys",
            )
    return fields


def event_rule_create(
    *,
    client: Client,
    event_type: str,
    template: str,
    recipient_path: str,
    context_path: str = "",
    priority: str = Priority.DEFAULT,
    tags: Sequence[str] = (),
    secret_keys: Sequence[str] = (),
) -> EventRule:
    """Store a rule of `client`: its events of `event_type` send `template`, with the values
    of `secret_keys` (a one-time code) masked in the stored email once it is sent."""
    fields = event_rule_validate(
        event_type=event_type,
        template=template,
        recipient_path=recipient_path,
        context_path=context_path,
        priority=priority,
        tags=list(tags),
        secret_keys=list(secret_keys),
    )
    return EventRule.objects.create(client=client, **fields)


def event_rule_update(*, rule: EventRule, **fields: Any) -> EventRule:
    """Change some of a rule's fields (those of RULE_FIELDS given), after checking them."""
    unknown = sorted(set(fields) - set(RULE_FIELDS))
    if unknown:
        raise ValidationFailed("Unknown field.", field=unknown[0])
    for name, value in event_rule_validate(**fields).items():
        setattr(rule, name, value)
    rule.save(update_fields=[*fields, "updated_at"])
    return rule


def event_rule_delete(*, rule: EventRule) -> None:
    """Delete a rule; the events it handled are forgotten with it."""
    rule.delete()


@dataclass(frozen=True)
class Event:
    """An event as published: its producer's id, its type, the client's name and its data."""

    id: str
    type: str
    client: str
    data: dict


@dataclass
class EventOutcome:
    """What handling one event did: emails created, rules that had already handled it, and
    the rules that could not (each with why)."""

    emails: list = field(default_factory=list)
    already_handled: int = 0
    failures: list[str] = field(default_factory=list)


def event_parse(*, raw: bytes | str | None) -> Event:
    """The event in a stream entry's `event` field, or EventRejected saying what is wrong."""
    if raw is None:
        raise EventRejected("The entry has no 'event' field.")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EventRejected(f"The event is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise EventRejected("The event must be a JSON object.")
    for name in ("id", "type", "client"):
        value = document.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and name == "id":
            value = document[name] = str(value)
        if not isinstance(value, str) or not value.strip():
            raise EventRejected(f"The event's '{name}' must be a non-empty string.")
    if len(document["id"]) > MAX_EVENT_ID_LENGTH:
        raise EventRejected(f"The event's 'id' is longer than {MAX_EVENT_ID_LENGTH} characters.")
    data = document.get("data", {})
    if not isinstance(data, dict):
        raise EventRejected("The event's 'data' must be a JSON object.")
    return Event(id=document["id"], type=document["type"], client=document["client"], data=data)


def _at_path(data: dict, path: str) -> Any:
    """The value at a dotted path in the data (a digit indexes a list), or KeyError."""
    value: Any = data
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(path)
    return value


def _rule_email_fields(rule: EventRule, event: Event) -> dict[str, Any]:
    """The recipients and context a rule finds in an event, or EventRejected."""
    try:
        recipients = _at_path(event.data, rule.recipient_path)
    except KeyError:
        raise EventRejected(f"No recipient at data.{rule.recipient_path}.") from None
    to = normalize_address_list(recipients, field=f"data.{rule.recipient_path}")
    if not to:
        raise EventRejected(f"No recipient at data.{rule.recipient_path}.")
    context: Any = event.data
    if rule.context_path:
        try:
            context = _at_path(event.data, rule.context_path)
        except KeyError:
            raise EventRejected(f"No context at data.{rule.context_path}.") from None
        if not isinstance(context, dict):
            raise EventRejected(f"The context at data.{rule.context_path} is not an object.")
    # Only the keys the context has: a secret key names a value to mask, not one to require.
    secret_keys = [key for key in rule.secret_keys if key in context]
    return {"to": to, "context": context, "secret_context_keys": secret_keys}


def _rule_bodies_check(rule: EventRule, email: EmailJob) -> None:
    """Render the email's bodies from its pinned template version, or EventRejected.

    Accepting an email renders only its subject: a body the event's data cannot render would
    otherwise become a failed email in the worker, where no one replays it. One render per
    (event, rule), in the transaction that is rolled back when it fails.
    """
    source = email.template_version or email.template
    # The selector loads the subject only; one query for both bodies, not one each.
    source.refresh_from_db(fields=["html", "text"])
    try:
        email_render(email=email)
    except TemplateRenderError as exc:
        raise EventRejected(
            f"Template '{rule.template}' cannot render its {exc.field or 'content'} with this "
            f"event's context: {exc.message}"
        ) from None


def _rule_apply(rule: EventRule, event: Event, client: Client, outcome: EventOutcome) -> None:
    """Create the rule's email for the event unless this (event, rule) was handled before.

    The handled-event row and the email commit together: after a crash either both exist (a
    re-delivery finds the row and skips) or neither does (the re-delivery sends).
    """
    with transaction.atomic():
        try:
            # Its own savepoint: a conflict rolls back only this INSERT. A consumer handling
            # the same event at the same moment waits here until the other one commits.
            with transaction.atomic():
                handled = HandledEvent.objects.create(
                    client=client, event_id=event.id, rule=rule, event_type=event.type
                )
        except IntegrityError:
            outcome.already_handled += 1
            return
        email = email_create(
            client=client,
            template=rule.template,
            priority=rule.priority,
            tags=rule.tags,
            metadata={"event_id": event.id, "event_type": event.type, "event_rule": rule.pk},
            **_rule_email_fields(rule, event),
        )
        _rule_bodies_check(rule, email)
        handled.email_id = email.id
        handled.save(update_fields=["email_id"])
    outcome.emails.append(email)


def event_handle(*, raw: bytes | str | None) -> EventOutcome:
    """Create the emails every rule of the event's client and type asks for, each (event, rule)
    pair once however often the event arrives.

    Raises EventRejected when no email can ever come of the event (malformed, unknown client,
    no rule for its type); a rule that cannot make its email (no recipient, a context the
    template's subject or bodies cannot render with) is listed in `failures` while the other
    rules still send.
    """
    event = event_parse(raw=raw)
    client = Client.objects.filter(name=event.client).first()
    if client is None:
        raise EventRejected(f"Unknown client '{event.client}'.")
    rules = event_rules_for_event(client=client, event_type=event.type)
    if not rules:
        raise EventRejected(f"No rule of client '{client.name}' for event type '{event.type}'.")
    outcome = EventOutcome()
    for rule in rules:
        try:
            _rule_apply(rule, event, client, outcome)
        except MailqueueError as exc:  # EventRejected, or the email service's ValidationFailed
            outcome.failures.append(f"rule {rule.pk} ({rule}): {exc.message}")
    return outcome


def dead_letters_replay(*, entry_ids: Sequence[str]) -> int:
    """Put dead letters back on the events stream (rules already done skip them); how many."""
    redis = connection()
    return sum(streams.dead_letter_replay(redis, entry_id=entry_id) for entry_id in entry_ids)


def dead_letters_delete(*, entry_ids: Sequence[str]) -> int:
    """Delete dead letters for good; how many there were."""
    redis = connection()
    return sum(streams.dead_letter_delete(redis, entry_id=entry_id) for entry_id in entry_ids)


def events_handled_purge(*, now: datetime | None = None, dry_run: bool = False) -> int:
    """Delete the records of (event, rule) pairs handled more than
    MAILQUEUE_EVENTS_HANDLED_KEEP_DAYS before `now`, in bounded batches; return how many (in a
    dry run, count them only).

    Past that time the same event id is no longer recognised: exactly once holds within it.
    """
    before = (now or timezone.now()) - timedelta(days=conf.events_handled_keep_days())
    return delete_in_batches(HandledEvent.objects.filter(handled_at__lt=before), dry_run=dry_run)
