"""Public endpoints of our own open and click tracking: the pixel and the tracked-link redirect.

Anyone on the internet can call them (recipients, their mail clients, link scanners, attackers
guessing), so every request is hostile until its token's signature checks: a bad token is a
404 that says nothing else, and a redirect goes only to a URL stored in `tracked_links`.
"""

from django.core.exceptions import DisallowedRedirect
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods

from tracking.engagement import (
    TRANSPARENT_GIF,
    click_token_read,
    email_click_record,
    email_open_record,
    open_token_read,
    tracked_link_url,
)


def _no_store(response: HttpResponse) -> HttpResponse:
    """No cache keeps the answer (each open must reach us) and no page learns the token."""
    add_never_cache_headers(response)
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _client(request: HttpRequest) -> dict[str, str]:
    return {
        "user_agent": request.META.get("HTTP_USER_AGENT", ""),
        "ip": request.META.get("REMOTE_ADDR", ""),
    }


def _not_found() -> HttpResponse:
    return _no_store(HttpResponse("Not found.", status=404, content_type="text/plain"))


@require_http_methods(["GET", "HEAD"])
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    """GET /t/o/<token>/: record an open of the email and answer a 1x1 transparent GIF."""
    email_id = open_token_read(token=token)
    if email_id is None:
        return _not_found()
    # HEAD is what link checkers and proxies send to probe; only a real load is an open.
    if request.method == "GET" and not email_open_record(email_id=email_id, **_client(request)):
        return _not_found()
    return _no_store(HttpResponse(TRANSPARENT_GIF, content_type="image/gif"))


@require_http_methods(["GET", "HEAD"])
def click_redirect(request: HttpRequest, token: str) -> HttpResponse:
    """GET /t/c/<token>/: record a click and redirect (302) to the link's stored URL."""
    found = click_token_read(token=token)
    if found is None:
        return _not_found()
    email_id, position = found
    if request.method == "HEAD":
        # No click recorded for a probe.
        url = tracked_link_url(email_id=email_id, position=position)
    else:
        url = email_click_record(email_id=email_id, position=position, **_client(request))
    if url is None:
        return _not_found()
    try:
        return _no_store(HttpResponseRedirect(url))
    except DisallowedRedirect:
        # Stored URLs are http(s) by construction; anything else is refused, never followed.
        return _not_found()
