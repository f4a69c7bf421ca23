"""The public `/topics/confirm/<token>/` page of double opt-in: GET shows a confirm button, POST
confirms. Like the unsubscribe page, no login, cookie or CSRF token: the signed token is the
authority, and a GET never changes anything (link scanners follow GETs)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from mailqueue.unsubscribe import masked_address
from topics.confirmation import BadConfirmToken, confirm_token_read
from topics.models import Subscriber
from topics.selectors import subscriber_by_token
from topics.services import subscriber_confirm

TEMPLATE = "topics/confirm.html"


def _invalid(request: HttpRequest) -> HttpResponse:
    """The 400 page of a link that is forged, expired, or whose subscriber is gone."""
    return render(request, TEMPLATE, {"state": "invalid"}, status=400)


@method_decorator([csrf_exempt, never_cache], name="dispatch")
class SubscriptionConfirmView(View):
    """GET: a page naming the topic and the (masked) address, with a confirm button.
    POST: confirm the pending subscription."""

    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        """The page with the confirm button (or what became of the subscription)."""
        try:
            subscriber = subscriber_by_token(token=confirm_token_read(token))
        except BadConfirmToken:
            return _invalid(request)
        if subscriber is None:
            return _invalid(request)
        return self._page(request, subscriber, done=False)

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        """Confirm (200); a subscriber that unsubscribed meanwhile is not subscribed again."""
        try:
            content = confirm_token_read(token)
        except BadConfirmToken:
            return _invalid(request)
        subscriber = subscriber_confirm(subscriber_id=content.subscriber_id, email=content.email)
        if subscriber is None:
            return _invalid(request)
        return self._page(request, subscriber, done=True)

    @staticmethod
    def _page(request: HttpRequest, subscriber: Subscriber, *, done: bool) -> HttpResponse:
        return render(
            request,
            TEMPLATE,
            {
                "state": subscriber.status,
                "done": done,
                "topic": subscriber.topic.name,
                "address": masked_address(subscriber.email),
            },
        )
