"""ESP tracking webhooks at /webhooks/<esp>/tracking/ (the paths of anymail's own URLs, which
serve the rest: inbound webhooks and Mandrill)."""

from django.urls import path

from tracking.webhooks import tracking_views

app_name = "tracking"
urlpatterns = [
    path(f"{esp}/tracking/", view.as_view(), name=f"{esp}_tracking_webhook")
    for esp, view in tracking_views().items()
]
