"""Admin for topics (checked like the API checks them) and their subscribers (read-only, with an
unsubscribe action that calls the API's service); lists stay fast at millions of subscribers."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from mailqueue.admin.helpers import EstimatedCountPaginator, ReadOnlyAdminMixin, pk_chunks
from mailqueue.errors import MailqueueError
from topics.models import Subscriber, SubscriberStatus, Topic, UnsubscribedVia
from topics.services import (
    TOPIC_FIELDS,
    subscribers_unsubscribe,
    topic_create,
    topic_update,
    topic_validate,
)


class TopicForm(forms.ModelForm):
    """A topic, refused with the API's messages (content, template, time zone)."""

    class Meta:
        model = Topic
        fields = ("client", "slug", *TOPIC_FIELDS)

    def clean(self) -> dict[str, Any]:
        """Run the service's checks on the fields given."""
        cleaned = super().clean()
        try:
            topic_validate(
                **{
                    name: cleaned.get(name) or ""
                    for name in ("template", "subject", "html", "text", "timezone")
                }
            )
        except MailqueueError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return cleaned


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    """A client's topics; writes go through the services the API calls."""

    form = TopicForm
    list_display = ("slug", "name", "client", "template", "double_opt_in", "created_at")
    list_filter = ("double_opt_in",)
    list_select_related = ("client",)
    search_fields = ("slug", "name")
    raw_id_fields = ("client",)

    def get_readonly_fields(self, request: HttpRequest, obj: Topic | None = None) -> tuple:
        """Client and slug are the topic's identity: emails and suppressions name them."""
        return ("client", "slug") if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Topic, form: forms.Form, change: bool) -> None:
        """Write through the services the API calls."""
        fields = {name: getattr(obj, name) for name in TOPIC_FIELDS}
        if change:
            topic_update(topic=obj, **fields)
        else:
            created = topic_create(client=obj.client, slug=obj.slug, **fields)
            # The admin goes on with `obj` (its messages and redirect need the primary key).
            vars(obj).update(vars(created))


@admin.register(Subscriber)
class SubscriberAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every topic's subscribers, newest first; an address is found by its start."""

    list_display = ("email", "topic", "client", "status", "unsubscribed_via", "created_at")
    # Both indexed (`subscriber_status_created`); a filter by topic would list every topic.
    list_filter = ("status", "unsubscribed_via")
    list_select_related = ("topic", "topic__client")
    search_fields = ("email",)
    search_help_text = "An exact address, or the start of one."
    paginator = EstimatedCountPaginator
    # The "N total" link would COUNT(*) the whole table on every filtered page.
    show_full_result_count = False
    actions = ["unsubscribe"]
    readonly_fields = (
        "topic",
        "email",
        "status",
        "context",
        "frequency",
        "confirmed_at",
        "unsubscribed_at",
        "unsubscribed_via",
        "created_at",
        "updated_at",
    )

    @admin.display(description="client", ordering="topic__client__name")
    def client(self, obj: Subscriber) -> str:
        """The topic's client."""
        return obj.topic.client.name

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Addresses starting with the term (the `subscriber_email` index serves the prefix)."""
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        return queryset.filter(email__startswith=term), False

    @admin.action(description="Unsubscribe selected subscribers", permissions=["change"])
    def unsubscribe(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Unsubscribe each (the topic's unsubscribe suppression, as through the API)."""
        changed = 0
        active = queryset.exclude(status=SubscriberStatus.UNSUBSCRIBED)
        for chunk in pk_chunks(active):
            subscribers = list(
                Subscriber.objects.filter(pk__in=chunk).select_related("topic", "topic__client")
            )
            subscribers_unsubscribe(subscribers=subscribers, via=UnsubscribedVia.ADMIN)
            changed += len(subscribers)
        self.message_user(request, f"Unsubscribed {changed} subscriber(s).", messages.SUCCESS)
