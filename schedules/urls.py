"""/api/v1/schedules/ routes (included by mailqueue.api.urls): one path, one view."""

from django.urls import path

from schedules import api

urlpatterns = [
    path("", api.SchedulesApi.as_view(), name="schedules"),
    path("<uuid:schedule_id>/", api.ScheduleDetailApi.as_view(), name="schedule-detail"),
    path("<uuid:schedule_id>/pause/", api.SchedulePauseApi.as_view(), name="schedule-pause"),
    path("<uuid:schedule_id>/resume/", api.ScheduleResumeApi.as_view(), name="schedule-resume"),
    path("<uuid:schedule_id>/run/", api.ScheduleRunApi.as_view(), name="schedule-run"),
]
