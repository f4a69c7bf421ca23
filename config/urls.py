"""Root URLs: admin, API, OpenAPI schema and docs, health, metrics, django-rq dashboard."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from mailqueue.health import health, health_live, health_ready
from mailqueue.metrics.views import metrics
from mailqueue.unsubscribe import UnsubscribeView
from topics.views import SubscriptionConfirmView
from tracking.engagement_views import click_redirect, open_pixel

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("mailqueue.api.urls")),
    # The schema and docs are public (no API key, and a stale key in the browser is ignored).
    path(
        "api/schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[AllowAny]),
        name="schema",
    ),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(
            url_name="schema", authentication_classes=[], permission_classes=[AllowAny]
        ),
        name="swagger-ui",
    ),
    path("health/", health, name="health"),
    path("health/live/", health_live, name="health-live"),
    path("health/ready/", health_ready, name="health-ready"),
    # Prometheus scrapes /metrics (no trailing slash) by default: answered there, no redirect.
    path("metrics", metrics, name="metrics"),
    # ESP tracking webhooks (ours store every event), then anymail's others (inbound).
    path("webhooks/", include("tracking.urls")),
    path("webhooks/", include("anymail.urls")),
    # Our own open and click tracking: public, the signed token is the authority.
    path("t/o/<str:token>/", open_pixel, name="tracking-open"),
    path("t/c/<str:token>/", click_redirect, name="tracking-click"),
    # RFC 8058 one-click unsubscribe: public, the signed token is the authority.
    path("u/<str:token>/", UnsubscribeView.as_view(), name="unsubscribe"),
    # Double opt-in confirmation of a topic subscription: public, the signed token is the authority.
    path("topics/confirm/<str:token>/", SubscriptionConfirmView.as_view(), name="topic-confirm"),
    path("django-rq/", include("django_rq.urls")),
]


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    """JSON 404 under /api/, Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    """JSON 500 under /api/ (always a bug: see the logs), Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse({"detail": "Internal server error."}, status=500)
    return defaults.server_error(request)
