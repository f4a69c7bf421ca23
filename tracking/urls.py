"""ESP webhooks at /webhooks/<esp>/<kind>/: anymail's own paths, served by our views (tracking
ones store their events, all refuse what anymail would answer with a 500)."""

from django.urls import URLPattern

from tracking.webhooks import webhook_views

app_name = "tracking"
urlpatterns = [
    URLPattern(pattern.pattern, view.as_view(), name=pattern.name)
    for pattern, view in webhook_views()
]
