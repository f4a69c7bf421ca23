"""/api/v1/event-rules/ routes (included by mailqueue.api.urls): one path, one view."""

from django.urls import path

from event_sends import api

urlpatterns = [
    path("", api.EventRulesApi.as_view(), name="event-rules"),
    path("<int:rule_id>/", api.EventRuleDetailApi.as_view(), name="event-rule-detail"),
]
