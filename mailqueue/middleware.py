"""Request ids and the per-request log line; the request body size limit answered with 413
(Django alone would answer 400)."""

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
