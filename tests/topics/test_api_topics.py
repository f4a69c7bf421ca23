"""Topic CRUD through the API: validation naming the field, per-client isolation, scopes, and
content changes that reach only the next emails."""

import pytest

from mailqueue.models import EmailJob
from topics.models import Topic
from topics.services import subscriber_subscribe, topic_email_create

pytestmark = pytest.mark.django_db

OWN = {"slug": "news", "name": "News", "subject": "Hi {{ name }}", "text": "Hello {{ name }}"}


def test_create_read_list_update_delete(api):
    """A topic is created with defaults, read back, changed (PATCH and PUT) and deleted."""
    response = api.post("/api/v1/topics/", OWN, format="json")
    assert response.status_code == 201, response.json()
    assert response["Location"] == "/api/v1/topics/news/"
    body = response.json()
    assert body["double_opt_in"] is False
    assert (body["send_time"], body["timezone"]) == ("09:00", "UTC")
    assert body["context"] == {} and body["template"] == ""

    assert api.get("/api/v1/topics/news/").json()["name"] == "News"
    patched = api.patch(
        "/api/v1/topics/news/",
        {"send_time": "18:30", "timezone": "Europe/Paris", "double_opt_in": True},
        format="json",
    )
    assert patched.status_code == 200, patched.json()
    assert (patched.json()["send_time"], patched.json()["timezone"]) == ("18:30", "Europe/Paris")
    assert patched.json()["subject"] == "Hi {{ name }}"

    put = api.put(
        "/api/v1/topics/news/",
        {"name": "Renamed", "subject": "S", "html": "<b>x</b>"},
        format="json",
    )
    assert put.status_code == 200, put.json()
    # PUT replaces: what was left out is back to its default.
    assert (put.json()["text"], put.json()["double_opt_in"]) == ("", False)

    assert api.delete("/api/v1/topics/news/").status_code == 204
    assert api.get("/api/v1/topics/news/").status_code == 404


def test_list_is_cursor_paginated_newest_first(api):
    """The list comes in cursor pages, newest first."""
    for index in range(3):
        api.post("/api/v1/topics/", {**OWN, "slug": f"t{index}"}, format="json")
    first = api.get("/api/v1/topics/?page_size=2").json()
    assert [t["slug"] for t in first["results"]] == ["t2", "t1"]
    second = api.get(first["next"]).json()
    assert [t["slug"] for t in second["results"]] == ["t0"]
    assert api.get("/api/v1/topics/?cursor=garbage").status_code == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": ""}, "html"),
        ({"text": "x", "subject": ""}, "subject"),
        ({"template": "nope", "subject": "", "text": ""}, "template"),
        ({"template": "welcome"}, "template"),  # a template and own content at once
        ({"html": "{% if %}"}, "html"),
        ({"subject": "{{ name|nofilter }}"}, "subject"),
        ({"html": "{% load static %}x"}, "html"),  # the sandbox refuses tag libraries
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"send_time": "25:00"}, "send_time"),
        ({"context": ["a"]}, "context"),
        ({"slug": "not a slug"}, "slug"),
    ],
)
def test_bad_topics_are_400_naming_the_field(api, welcome_template, body, field):
    """Each refused topic names the field and stores nothing."""
    response = api.post("/api/v1/topics/", {**OWN, **body}, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not Topic.objects.exists()


def test_a_template_topic_uses_a_stored_template(api, welcome_template):
    """A topic may name an active template instead of having its own content."""
    body = {"slug": "digest", "name": "Digest", "template": "welcome", "context": {"name": "A"}}
    response = api.post("/api/v1/topics/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["template"] == "welcome"


def test_duplicate_slug_is_400_naming_slug_but_other_clients_may_use_it(api, api_for):
    """A client's slugs are unique; another client has its own namespace and cannot see ours."""
    assert api.post("/api/v1/topics/", OWN, format="json").status_code == 201
    again = api.post("/api/v1/topics/", OWN, format="json")
    assert again.status_code == 400 and "slug" in again.json()

    other = api_for("globex", ["read", "templates", "send"])
    assert other.get("/api/v1/topics/news/").status_code == 404
    assert other.patch("/api/v1/topics/news/", {"name": "x"}, format="json").status_code == 404
    assert other.delete("/api/v1/topics/news/").status_code == 404
    assert other.get("/api/v1/topics/news/subscribers/").status_code == 404
    assert other.get("/api/v1/topics/").json()["results"] == []
    assert other.post("/api/v1/topics/", OWN, format="json").status_code == 201
    assert Topic.objects.filter(slug="news").count() == 2


def test_slug_cannot_change(api):
    """PUT/PATCH with another slug is refused naming `slug`."""
    api.post("/api/v1/topics/", OWN, format="json")
    response = api.patch("/api/v1/topics/news/", {"slug": "other"}, format="json")
    assert response.status_code == 400 and "slug" in response.json()


def test_scopes(api_for):
    """Writing topics needs `templates`; reading needs `read` (or `templates`)."""
    reader = api_for("acme", ["read"])
    sender = api_for("acme", ["send"])
    writer = api_for("acme", ["templates"])
    assert reader.post("/api/v1/topics/", OWN, format="json").status_code == 403
    assert sender.post("/api/v1/topics/", OWN, format="json").status_code == 403
    assert writer.post("/api/v1/topics/", OWN, format="json").status_code == 201
    assert reader.get("/api/v1/topics/news/").status_code == 200
    assert sender.get("/api/v1/topics/news/").status_code == 403
    assert reader.delete("/api/v1/topics/news/").status_code == 403
    assert writer.delete("/api/v1/topics/news/").status_code == 204


def test_a_content_change_reaches_the_next_emails_only(api, acme, news):
    """An email made before a change keeps what it was made with."""
    subscriber = subscriber_subscribe(topic=news, email="ada@example.com").subscriber
    before = topic_email_create(topic=news, subscriber=subscriber)
    api.patch("/api/v1/topics/news/", {"subject": "Changed {{ name }}"}, format="json")
    news.refresh_from_db()
    after = topic_email_create(topic=news, subscriber=subscriber)
    assert EmailJob.objects.get(pk=before.pk).subject == "News for reader"
    assert EmailJob.objects.get(pk=after.pk).subject == "Changed reader"
