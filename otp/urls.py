"""/api/v1/otp/ routes (included by mailqueue.api.urls)."""

from django.urls import path

from otp import api

urlpatterns = [
    path("", api.OtpIssueApi.as_view(), name="otp"),
    path("verify/", api.OtpVerifyApi.as_view(), name="otp-verify"),
]
