"""ESP tracking webhooks: anymail's views, authenticated and parsed by anymail, with every
request's events stored together by `esp_events_record` (instead of one signal per event).

Amazon SES posts through Amazon SNS, whose signatures anymail does not check: its view verifies
the signature, the certificate's host and the topic before anything is parsed or confirmed.
"""

import json

from anymail import urls as anymail_urls
from anymail.signals import tracking
from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from django.http import HttpRequest, HttpResponse, JsonResponse

from tracking.esp_events import esp_events_record
from tracking.sns import sns_message_verify, sns_subscription_confirm

# What a payload that passed authentication but cannot be read raises inside anymail's parsers.
PAYLOAD_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError)


class StoredTrackingMixin:
    """Stores all the events of one webhook request with a constant number of queries.

    A webhook with no way to authenticate (no WEBHOOK_SECRET and no ESP signature configured)
    is a 403: anymail would only warn and accept anyone's events, which could suppress any
    address. A failed authentication is anymail's 400 (nothing read, nothing written); a payload
    that cannot be parsed is a 400 naming the ESP; a database error is a 500, so the ESP retries.
    """

    # The ESP's name in our URLs and rows (`postmark`, `amazon_ses`), set per view class.
    esp: str = ""

    def verify_payload(self, request: HttpRequest) -> None:
        """Checks beyond anymail's validators, after them; none by default."""

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        """Authenticate, parse and store the request's events."""
        # anymail's own test for "this webhook is open to anyone on the web".
        if self.warn_if_no_basic_auth and not self.basic_auth:
            return JsonResponse(
                {
                    "detail": f"The {self.esp} webhook is not configured: set "
                    "ANYMAIL_WEBHOOK_SECRET (or the ESP's signing key)."
                },
                status=403,
            )
        self.run_validators(request)
        self.verify_payload(request)
        try:
            events = self.parse_events(request)
        except PAYLOAD_ERRORS:
            return JsonResponse(
                {"detail": f"The {self.esp} webhook payload could not be parsed."}, status=400
            )
        esp_events_record(esp=self.esp, events=events)
        return HttpResponse()


class AmazonSESTrackingWebhook(StoredTrackingMixin, AmazonSESTrackingWebhookView):
    """SES events through SNS: signature, certificate host and topic checked first."""

    esp = "amazon_ses"
    # Every message is signature-checked and its topic allow-listed (MAILQUEUE_SNS_TOPIC_ARNS).
    warn_if_no_basic_auth = False

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        """Ask SNS for basic auth when it is configured, refuse a body that is not an SNS
        message, then store the events."""
        if self.basic_auth and not request.META.get("HTTP_AUTHORIZATION"):
            # SNS sends its credentials only after a 401 that asks for them.
            response = HttpResponse(status=401)
            response["WWW-Authenticate"] = 'Basic realm="Anymail WEBHOOK_SECRET"'
            return response
        try:
            message = json.loads(request.body.decode(request.encoding or "utf-8"))
        except (ValueError, UnicodeDecodeError):
            message = None
        if not isinstance(message, dict):
            return JsonResponse({"detail": "The body is not an Amazon SNS message."}, status=400)
        # anymail's validators and parser read the message from here.
        request._sns_message = message
        return super().post(request, *args, **kwargs)

    def verify_payload(self, request: HttpRequest) -> None:
        """Raise unless Amazon SNS signed the message for an allowed topic."""
        sns_message_verify(request._sns_message)

    def auto_confirm_sns_subscription(self, sns_message: dict) -> None:
        """Confirm a subscription by loading its SubscribeURL (the message is verified by now)."""
        if self.auto_confirm_enabled:
            sns_subscription_confirm(sns_message)


def _stored_view(esp: str, view_class: type) -> type:
    """anymail's tracking view for an ESP, storing its events."""
    if esp == AmazonSESTrackingWebhook.esp:
        return AmazonSESTrackingWebhook
    return type(view_class.__name__, (StoredTrackingMixin, view_class), {"esp": esp})


def tracking_views() -> dict[str, type]:
    """Every ESP anymail has a tracking webhook for, by name, with the view that stores events."""
    views = {}
    for pattern in anymail_urls.urlpatterns:
        view_class = getattr(pattern.callback, "view_class", None)
        name = pattern.name or ""
        # Mandrill's combined tracking+inbound view is left to anymail.
        if view_class is None or not name.endswith("_tracking_webhook"):
            continue
        if getattr(view_class, "signal", None) is not tracking:
            continue
        esp = name.removesuffix("_tracking_webhook")
        views[esp] = _stored_view(esp, view_class)
    return views
