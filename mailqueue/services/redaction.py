"""Masking of secret context values (a one-time code) in what Mailqueue stores and shows.

An email names its secret context keys (`EmailJob.secret_context_keys`). The worker renders
with the real values, so the context keeps them until the email is final; everything else is
masked: the subject stored when the email is accepted, the rendered content, errors, attempts
and events written with each outcome, and the admin's and the API's displays. Once the email is
sent, failed, suppressed or cancelled, the context values are masked too. Only emails that name
secret keys pay for any of it.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.utils.html import escape

from mailqueue.models import EmailJob
from templates_app.rendering import RenderedContent

if TYPE_CHECKING:
    from mailqueue.services.outcomes import Decision

MASK = "••••••"
_CHUNK = 1000


def secret_values(*, context: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """The secret values as they may appear in rendered text (as given and HTML-escaped),
    longest first so that a value containing another is masked whole."""
    found = set()
    for key in keys:
        value = context.get(key)
        if value is None or value == "" or value == MASK:
            continue
        found.update((str(value), str(escape(value))))
    return sorted(found, key=len, reverse=True)


def text_redact(text: str, secrets: Sequence[str]) -> str:
    """The text with every occurrence of each secret replaced by the mask."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _value_redact(value: Any, secrets: Sequence[str]) -> Any:
    """Strings masked inside any JSON-like value (events' data)."""
    if isinstance(value, str):
        return text_redact(value, secrets)
    if isinstance(value, dict):
        return {key: _value_redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_value_redact(item, secrets) for item in value]
    return value


def context_redact(*, context: Mapping[str, Any], keys: Iterable[str]) -> dict:
    """A copy of the context whose secret keys hold the mask."""
    keys = set(keys)
    return {name: MASK if name in keys else value for name, value in context.items()}


def content_redact(*, content: RenderedContent, secrets: Sequence[str]) -> RenderedContent:
    """Rendered content with the secrets masked (what the admin's preview shows)."""
    return RenderedContent(
        subject=text_redact(content.subject, secrets),
        html=text_redact(content.html, secrets),
        text=text_redact(content.text, secrets),
    )


def email_secret_values(*, email: EmailJob) -> list[str]:
    """The values of an email's secret context keys (see secret_values); [] for most emails."""
    if not email.secret_context_keys:
        return []
    return secret_values(context=email.context or {}, keys=email.secret_context_keys)


def decision_redact(*, decision: "Decision") -> None:
    """Mask the email's secrets in everything an outcome writes: the rendered subject and bodies,
    the error, the attempts' messages and the events' descriptions and data."""
    secrets = email_secret_values(email=decision.email)
    if not secrets:
        return
    for name in ("subject", "html", "text", "last_error"):
        if isinstance(decision.fields.get(name), str):
            decision.fields[name] = text_redact(decision.fields[name], secrets)
    for attempt in decision.tries:
        attempt.error_message = text_redact(attempt.error_message, secrets)
    for event in decision.events:
        event.description = text_redact(event.description, secrets)
        event.data = _value_redact(event.data, secrets)


def emails_context_redact(*, email_ids: Iterable[UUID]) -> int:
    """Mask the secret context values of the emails among the ids that have any (they are final:
    nothing renders them again); return how many were changed."""
    email_ids = list(email_ids)
    changed = 0
    # In chunks: a bulk cancel may name 100,000 emails, nearly all without secrets.
    for start in range(0, len(email_ids), _CHUNK):
        emails = (
            EmailJob.objects.filter(pk__in=email_ids[start : start + _CHUNK])
            .exclude(secret_context_keys=[])
            .only("pk", "context", "secret_context_keys")
        )
        masked = []
        for email in emails:
            context = context_redact(context=email.context or {}, keys=email.secret_context_keys)
            if context != email.context:
                email.context = context
                masked.append(email)
        # One UPDATE for the chunk, not one per email.
        changed += EmailJob.objects.bulk_update(masked, ["context"]) if masked else 0
    return changed
