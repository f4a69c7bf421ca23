"""RFC 8058 one-click unsubscribe: the signed tokens, the List-Unsubscribe headers of
non-transactional email, and the public `/u/<token>/` page.

A token is self-contained (the address, the client, the topic and the email, signed with the
SECRET_KEY under its own salt), so it keeps working after the email itself is purged, and no
expiry: a link in a years-old message must still unsubscribe. Forged or altered tokens are 404.
"""

from dataclasses import dataclass
from uuid import UUID

from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from mailqueue import conf
from mailqueue.errors import ValidationFailed
from mailqueue.models import EmailJob

_SALT = "mailqueue.unsubscribe"
# The body RFC 8058 mail clients POST; the confirm button of the page posts the same.
ONE_CLICK = "One-Click"
UNSUBSCRIBE_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


@dataclass(frozen=True)
class UnsubscribeToken:
    """What an unsubscribe link names: who is unsubscribed, from which client's email and topic."""

    address: str
    client_id: int
    topic: str = ""
    email_id: UUID | None = None


def token_make(token: UnsubscribeToken) -> str:
    """A URL-safe signed token for an unsubscribe link (compact: lists, not dicts)."""
    email = token.email_id.hex if token.email_id else ""
    return signing.dumps([token.address, token.client_id, token.topic, email], salt=_SALT)


def token_read(value: str) -> UnsubscribeToken:
    """The token's content; Http404 when it is forged, altered or malformed."""
    try:
        address, client_id, topic, email = signing.loads(value, salt=_SALT)
        return UnsubscribeToken(
            address=str(address),
            client_id=int(client_id),
            topic=str(topic),
            email_id=UUID(hex=email) if email else None,
        )
    except (signing.BadSignature, ValueError, TypeError):
        raise Http404("No such unsubscribe link.") from None


def unsubscribe_url(token: UnsubscribeToken) -> str:
    """The public one-click unsubscribe URL for a token."""
    path = reverse("unsubscribe", kwargs={"token": token_make(token)})
    return f"{conf.public_url()}{path}"


def email_unsubscribe_url(email: EmailJob) -> str:
    """The one-click unsubscribe URL of a non-transactional email (its first To recipient)."""
    return unsubscribe_url(
        UnsubscribeToken(
            address=email.recipient, client_id=email.client_id, topic=email.topic, email_id=email.pk
        )
    )


def email_unsubscribe_headers(email: EmailJob) -> dict[str, str]:
    """List-Unsubscribe and List-Unsubscribe-Post for a non-transactional email; none otherwise."""
    if email.transactional:
        return {}
    links = [f"<{email_unsubscribe_url(email)}>"]
    mailto = conf.unsubscribe_mailto()
    if mailto:
        links.append(f"<mailto:{mailto}?subject=unsubscribe>")
    return {
        "List-Unsubscribe": ", ".join(links),
        "List-Unsubscribe-Post": f"List-Unsubscribe={ONE_CLICK}",
    }


def email_render_context(email: EmailJob) -> dict:
    """The context an email's template renders with: `unsubscribe_url` added when the email is
    non-transactional (a template that uses it on transactional email renders it empty)."""
    if email.transactional:
        return email.context
    return {**email.context, "unsubscribe_url": email_unsubscribe_url(email)}


def masked_address(address: str) -> str:
    """An address shown partly hidden (`a***@example.com`), for a page anyone with the link sees."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}{'*' * max(3, len(local) - 1)}@{domain}"


@method_decorator([csrf_exempt, never_cache], name="dispatch")
class UnsubscribeView(View):
    """GET: a page naming the (masked) address with a confirm button. POST with
    `List-Unsubscribe=One-Click` (a mail client's RFC 8058 request, or the button): unsubscribe.

    No authentication, cookie or CSRF token: the signed token is the authority. A GET never
    unsubscribes, because link scanners follow GETs.
    """

    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        """The confirmation page."""
        content = token_read(token)
        return render(
            request,
            "mailqueue/unsubscribe.html",
            {"address": masked_address(content.address), "done": False, "topic": content.topic},
        )

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        """Unsubscribe at once (200, no redirect); 400 without `List-Unsubscribe=One-Click`."""
        from mailqueue.services.suppressions import address_unsubscribe

        content = token_read(token)
        try:
            one_click = request.POST.get("List-Unsubscribe")
        except MultiPartParserError:
            one_click = None
        if one_click != ONE_CLICK:
            return HttpResponse(
                "List-Unsubscribe: expected the body List-Unsubscribe=One-Click.",
                status=400,
                content_type="text/plain; charset=utf-8",
            )
        address_unsubscribe(
            address=content.address,
            client_id=content.client_id,
            topic=content.topic,
            email_id=content.email_id,
        )
        return render(
            request,
            "mailqueue/unsubscribe.html",
            {"address": masked_address(content.address), "done": True, "topic": content.topic},
        )


def email_is_transactional(*, topic: str, transactional: bool | None) -> bool:
    """Whether an email is transactional: by default yes, never when it has a topic (a topic
    is something a recipient can unsubscribe from); ValidationFailed for an explicit
    `transactional: true` with a topic."""
    if topic:
        if transactional:
            raise ValidationFailed(
                "An email with a 'topic' is not transactional: leave 'transactional' out or "
                "set it to false.",
                field="transactional",
            )
        return False
    return True if transactional is None else transactional


def check_unsubscribe_headers(*, headers: dict, transactional: bool) -> None:
    """Refuse a client's own List-Unsubscribe* headers on non-transactional email, where they
    are the service's (ValidationFailed naming `headers`)."""
    if transactional:
        return
    for name in headers:
        if name.lower() in UNSUBSCRIBE_HEADERS:
            raise ValidationFailed(
                f"'{name}' is set by Mailqueue on non-transactional email (a 'topic' or "
                "'transactional': false); it can only be given on transactional email.",
                field="headers",
            )
