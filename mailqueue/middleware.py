"""Request body size limit answered with 413 (Django alone would answer 400)."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from mailqueue import conf


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
