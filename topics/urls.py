"""/api/v1/topics/ routes (included by mailqueue.api.urls): one path, one view."""

from django.urls import path

from topics import api

urlpatterns = [
    path("", api.TopicsApi.as_view(), name="topics"),
    path("<slug:slug>/", api.TopicDetailApi.as_view(), name="topic-detail"),
    path("<slug:slug>/subscribers/", api.SubscribersApi.as_view(), name="topic-subscribers"),
    path(
        "<slug:slug>/subscribers/<str:email>/",
        api.SubscriberDetailApi.as_view(),
        name="topic-subscriber-detail",
    ),
]
