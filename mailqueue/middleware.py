"""Request ids and the per-request log line; the request body size limit answered with 413
(Django alone would answer 400); the Content-Security-Policy and the token pages' Referrer-Policy
(Django's SecurityMiddleware adds the other security headers)."""

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from mailqueue import conf
from mailqueue.logs import request_id_accept, request_id_reset, request_id_set, request_log


class RequestLogMiddleware:
    """Give each request an id (a valid X-Request-ID, or a new one), echo it in the response,
    and log one `http.request` line; while the request runs the id is the current one, so the
    emails it creates store it and the lines it logs carry it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Run the request under its id, then answer with X-Request-ID and log it."""
        started = time.monotonic()
        request_id = request_id_accept(request.headers.get("X-Request-ID"))
        request.request_id = request_id
        token = request_id_set(request_id)
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            request_log(
                request=request,
                response=response,
                duration_ms=int((time.monotonic() - started) * 1000),
                request_id=request_id,
            )
        finally:
            # Threads serve one request after another: the next one must not inherit this id.
            request_id_reset(token)
        return response


class RequestBodyLimitMiddleware:
    """Reject any request whose declared body is larger than MAILQUEUE_MAX_BODY_BYTES."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Answer 413 before reading an oversized body."""
        limit = conf.max_body_bytes()
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Invalid Content-Length header."}, status=400)
        if length > limit:
            return JsonResponse(
                {"detail": f"Request body is {length} bytes; the limit is {limit} bytes."},
                status=413,
            )
        return self.get_response(request)


# Every HTML page: scripts only from our own static files (the admin has no inline script);
# inline styles are allowed because the admin and the public pages use them. Images may come
# from any https: URL so that an email's preview (a sandboxed srcdoc iframe, which inherits this
# policy) shows its remote images; it runs no script either way (sandbox="").
HTML_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# django-rq's pages and the Swagger UI come with inline scripts; still nothing from elsewhere.
INLINE_SCRIPT_POLICY = HTML_POLICY.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
INLINE_SCRIPT_PREFIXES = ("/django-rq/", "/api/docs/")
# Anything else (JSON, the tracking pixel, redirects, static files) loads nothing and is
# framed by nobody.
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'"
# Public pages whose URL carries a token: no Referer may send it anywhere, even to us.
TOKEN_PREFIXES = ("/u/", "/topics/confirm/", "/t/")


class ContentSecurityPolicyMiddleware:
    """Add a Content-Security-Policy to every response that has none, and Referrer-Policy:
    no-referrer to the public token pages (placed after SecurityMiddleware, whose defaults give
    way to these)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Answer, then add the headers this path and content type call for."""
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self.policy(request, response)
        if request.path.startswith(TOKEN_PREFIXES):
            response["Referrer-Policy"] = "no-referrer"
        return response

    @staticmethod
    def policy(request: HttpRequest, response: HttpResponse) -> str:
        """The policy for this answer: by content type, then by path."""
        if not response.get("Content-Type", "").startswith("text/html"):
            return OTHER_POLICY
        if request.path.startswith(INLINE_SCRIPT_PREFIXES):
            return INLINE_SCRIPT_POLICY
        return HTML_POLICY
