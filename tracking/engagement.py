"""Our own open and click tracking, for providers that track nothing themselves (SMTP).

When an email is sent with `track_opens`, a 1x1 transparent GIF at a signed URL goes at the end
of its HTML body; with `track_clicks`, every http(s) link of its HTML body points to a signed URL
naming the email and the link's position instead. The original URLs travel with the outcome and
are stored as `tracked_links` rows, apart from the body, so links keep working after retention
drops bodies. The rewrite runs in the send threads: it touches no database. The text part is
never changed.

Tokens are `django.core.signing` signatures (with a salt per kind, no expiry) of the email id and
the position: a forged or altered token is refused, and a redirect target only ever comes from
`tracked_links`, so the click URL is not an open redirect.
"""

import html
import logging
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from uuid import UUID

from django.core import signing
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from client_webhooks.services import webhooks_dispatch
from mailqueue import conf
from mailqueue.models import EmailJob
from templates_app.models import EmailTemplate
from templates_app.rendering import RenderedContent
from tracking.models import EventType, TrackedLink, TrackingEvent

logger = logging.getLogger(__name__)

_OPEN_SALT = "mailqueue.tracking.open"
_CLICK_SALT = "mailqueue.tracking.click"
# Not in the base64url alphabet of signatures, nor in a hex id or a position: unambiguous, and
# safe in a URL path without any escaping.
_SEPARATOR = "."
# Longer than any token we make; longer input is refused before any signature work.
MAX_TOKEN_LENGTH = 200
# Bounds on what a (hostile) client may make us store per event.
MAX_USER_AGENT_LENGTH = 1000
# The pixel: invisible, no layout of its own, alt empty so no text shows when images are off.
_PIXEL_TAG = '<img src="{}" width="1" height="1" alt="" style="border:0;width:1px;height:1px">'
TRANSPARENT_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def tracking_flags(
    *, track_opens: bool | None, track_clicks: bool | None, template: EmailTemplate | None
) -> dict[str, bool]:
    """An email's `track_opens`/`track_clicks`: the request's, else the template's, else the
    MAILQUEUE_TRACK_OPENS / MAILQUEUE_TRACK_CLICKS defaults (off unless set)."""
    if track_opens is None and template is not None:
        track_opens = template.track_opens
    if track_clicks is None and template is not None:
        track_clicks = template.track_clicks
    return {
        "track_opens": conf.track_opens() if track_opens is None else track_opens,
        "track_clicks": conf.track_clicks() if track_clicks is None else track_clicks,
    }


def _signer(salt: str) -> signing.Signer:
    return signing.Signer(salt=salt, sep=_SEPARATOR)


def open_token(*, email_id: UUID) -> str:
    """The signed token of an email's tracking pixel."""
    return _signer(_OPEN_SALT).sign(email_id.hex)


def open_token_read(*, token: str) -> UUID | None:
    """The email id an open token names, or None when it is forged, altered or malformed."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        return UUID(hex=_signer(_OPEN_SALT).unsign(token))
    except (signing.BadSignature, ValueError):
        return None


def click_token(*, email_id: UUID, position: int) -> str:
    """The signed token of one tracked link: the email id and the link's position."""
    return _signer(_CLICK_SALT).sign(f"{email_id.hex}-{position}")


def click_token_read(*, token: str) -> tuple[UUID, int] | None:
    """(email id, position) a click token names, or None when forged, altered or malformed."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        email_hex, _, position = _signer(_CLICK_SALT).unsign(token).partition("-")
        if not position.isdigit() or not position.isascii():
            return None
        return UUID(hex=email_hex), int(position)
    except (signing.BadSignature, ValueError):
        return None


def open_url(*, email_id: UUID) -> str:
    """The absolute URL of an email's tracking pixel."""
    path = reverse("tracking-open", kwargs={"token": open_token(email_id=email_id)})
    return f"{conf.public_url()}{path}"


def click_url(*, email_id: UUID, position: int) -> str:
    """The absolute URL a tracked link points to."""
    token = click_token(email_id=email_id, position=position)
    return f"{conf.public_url()}{reverse('tracking-click', kwargs={'token': token})}"


class _HtmlScan(HTMLParser):
    """Finds the `<a href>` start tags and the last `</body>` of a document, as offsets.

    html.parser follows the document the way a browser tokenizes it (comments, `<script>` and
    `<style>` contents are not tags), so a link-like string in those is left alone.
    """

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        # html.parser reports positions as (line, column), lines ending at "\n" only.
        self.line_starts = [0]
        newline = document.find("\n")
        while newline >= 0:
            self.line_starts.append(newline + 1)
            newline = document.find("\n", newline + 1)
        # (offset of the tag, its raw text, the href value as a browser reads it)
        self.links: list[tuple[int, str, str]] = []
        self.body_end: int | None = None

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Remember an `<a>` tag with an href (the first one counts, as in browsers)."""
        if tag != "a":
            return
        href = next((value for name, value in attrs if name == "href"), None)
        raw = self.get_starttag_text()
        if href is not None and raw:
            self.links.append((self._offset(), raw, href))

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        """Remember where the last `</body>` starts."""
        if tag == "body":
            self.body_end = self._offset()


def _href_value_span(raw_tag: str) -> tuple[int, int] | None:
    """Start and end, in a raw start tag, of its first href attribute's value (with its quotes).

    Attributes are walked one by one, as html.parser does, so `href=` inside another
    attribute's quoted value is never taken for the attribute.
    """
    index, length = 1, len(raw_tag)
    while index < length and not (raw_tag[index].isspace() or raw_tag[index] in "/>"):
        index += 1  # the tag name
    while index < length:
        while index < length and (raw_tag[index].isspace() or raw_tag[index] == "/"):
            index += 1
        start = index
        while index < length and not (raw_tag[index].isspace() or raw_tag[index] in "/>="):
            index += 1
        name = raw_tag[start:index].lower()
        if not name:
            return None  # `>` or something html.parser would not call an attribute
        probe = index
        while probe < length and raw_tag[probe].isspace():
            probe += 1
        if probe >= length or raw_tag[probe] != "=":
            continue  # an attribute without a value
        index = probe + 1
        while index < length and raw_tag[index].isspace():
            index += 1
        value_start = index
        if index < length and raw_tag[index] in "\"'":
            end = raw_tag.find(raw_tag[index], index + 1)
            if end < 0:
                return None
            index = end + 1
        else:
            while index < length and not (raw_tag[index].isspace() or raw_tag[index] == ">"):
                index += 1
        if name == "href":
            return value_start, index
    return None


def _trackable(url: str, public_url: str) -> bool:
    """Whether a link is rewritten: http(s) only, never our own unsubscribe or tracking links."""
    lowered = url.lower()
    if not lowered.startswith(("http://", "https://")):
        return False  # mailto:, tel:, #fragment, relative and other schemes stay as written
    return f"{public_url}/u/" not in url and not url.startswith(f"{public_url}/t/")


@dataclass(frozen=True)
class TrackedHtml:
    """An HTML body with tracking applied, and the original URL of each rewritten link."""

    html: str
    links: list[tuple[int, str]]


def html_track(*, email_id: UUID, document: str, opens: bool, clicks: bool) -> TrackedHtml:
    """The HTML with its http(s) links rewritten (`clicks`) and the pixel added (`opens`).

    Only href values change: every other byte of the document stays as written.
    """
    scan = _HtmlScan(document)
    scan.feed(document)
    scan.close()
    public_url = conf.public_url()
    edits: list[tuple[int, int, str]] = []
    links: list[tuple[int, str]] = []
    if clicks:
        for offset, raw, href in scan.links:
            url = _browser_url(href)
            span = _href_value_span(raw)
            if not _trackable(url, public_url) or span is None:
                continue
            # The raw tag must be where the offset says, or the document is not what was
            # scanned (never expected): leave the link alone rather than break the HTML.
            if document[offset : offset + len(raw)] != raw:
                continue
            position = len(links)
            target = click_url(email_id=email_id, position=position)
            edits.append((offset + span[0], offset + span[1], f'"{html.escape(target)}"'))
            links.append((position, url))
    if opens:
        pixel = _PIXEL_TAG.format(html.escape(open_url(email_id=email_id)))
        at = scan.body_end if scan.body_end is not None else len(document)
        edits.append((at, at, pixel))
    parts, last = [], 0
    for start, end, text in sorted(edits, key=lambda edit: edit[0]):
        parts += [document[last:start], text]
        last = end
    parts.append(document[last:])
    return TrackedHtml(html="".join(parts), links=links)


def _browser_url(href: str) -> str:
    """The URL a browser follows for this href: without tabs and newlines anywhere, and without
    leading and trailing spaces and control characters (the WHATWG URL parser's first steps)."""
    return href.translate(_TAB_NEWLINE).strip(_C0_AND_SPACE)


_TAB_NEWLINE = {9: None, 10: None, 13: None}
_C0_AND_SPACE = "".join(map(chr, range(33)))


def content_track(
    *, email: EmailJob, content: RenderedContent
) -> tuple[RenderedContent, list[TrackedLink]]:
    """The content to send with the email's tracking applied to its HTML, and the unsaved
    TrackedLink rows of its rewritten links; no database access (runs in send threads)."""
    if not content.html or not (email.track_opens or email.track_clicks):
        return content, []
    try:
        tracked = html_track(
            email_id=email.pk,
            document=content.html,
            opens=email.track_opens,
            clicks=email.track_clicks,
        )
    except Exception as exc:
        # HTML the parser chokes on (conditional comments of Outlook, broken markup): send it
        # as written, untracked, rather than fail an email over an add-on. Only the error's
        # class is logged: a parser's message may quote the email's content.
        logger.warning(
            "email %s: HTML not trackable (%s), sent untracked", email.pk, type(exc).__name__
        )
        return content, []
    rows = [
        TrackedLink(email_id=email.pk, position=position, url=url)
        for position, url in tracked.links
    ]
    return replace(content, html=tracked.html), rows


def _engagement_record(
    *,
    email_id: UUID,
    event_type: str,
    first_field: str,
    description: str,
    user_agent: str,
    ip: str,
    url: str = "",
) -> bool:
    """Record one open or click: an event, and the email's first-occurrence time if unset.

    False (and nothing written) when the email no longer exists.
    """
    now = timezone.now()
    with transaction.atomic():
        updated = EmailJob.objects.filter(pk=email_id).update(
            **{first_field: Coalesce(F(first_field), now)}
        )
        if not updated:
            return False
        event = TrackingEvent.objects.create(
            email_id=email_id,
            event_type=event_type,
            occurred_at=now,
            description=description[:2000],
            user_agent=user_agent[:MAX_USER_AGENT_LENGTH],
            click_url=url,
            data={"ip": ip} if ip and conf.track_store_ip() else {},
        )
        # The client's outbound webhooks hear of opens and clicks like of every other event.
        webhooks_dispatch([event])
    return True


def email_open_record(*, email_id: UUID, user_agent: str = "", ip: str = "") -> bool:
    """Record that an email was opened (its pixel loaded); False if the email is gone."""
    return _engagement_record(
        email_id=email_id,
        event_type=EventType.OPENED,
        first_field="opened_at",
        description="Opened (tracking pixel loaded)",
        user_agent=user_agent,
        ip=ip,
    )


def tracked_link_url(*, email_id: UUID, position: int) -> str | None:
    """The original URL of an email's tracked link, or None when there is no such link."""
    return (
        TrackedLink.objects.filter(email_id=email_id, position=position)
        .values_list("url", flat=True)
        .first()
    )


def email_click_record(
    *, email_id: UUID, position: int, user_agent: str = "", ip: str = ""
) -> str | None:
    """Record a click on an email's tracked link; its original URL, or None if it is unknown."""
    url = tracked_link_url(email_id=email_id, position=position)
    if url is None:
        return None
    recorded = _engagement_record(
        email_id=email_id,
        event_type=EventType.CLICKED,
        first_field="clicked_at",
        description=f"Clicked link #{position}: {url}",
        user_agent=user_agent,
        ip=ip,
        url=url,
    )
    return url if recorded else None
