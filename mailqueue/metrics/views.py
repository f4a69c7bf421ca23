"""`GET /metrics`: the Prometheus text format, behind a bearer token when one is configured."""

import hmac

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailqueue import conf
from mailqueue.metrics.collector import metrics_registry


def _authorized(request: HttpRequest, token: str) -> bool:
    """Whether the request carries `Authorization: Bearer <token>` (compared in constant time)."""
    given = request.headers.get("Authorization", "").encode()
    return hmac.compare_digest(given, f"Bearer {token}".encode())


@never_cache
@require_http_methods(["GET", "HEAD"])
def metrics(request: HttpRequest) -> HttpResponse:
    """Every metric, read now; 401 without the right token while MAILQUEUE_METRICS_TOKEN is set."""
    token = conf.metrics_token()
    if token and not _authorized(request, token):
        response = HttpResponse(status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
