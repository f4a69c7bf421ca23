"""One path, one view."""

from django.urls import path
from outbox.views import MessageCreateApi

urlpatterns = [path("api/v1/emails/", MessageCreateApi.as_view())]
