"""ESP webhooks: anymail's views, authenticated and parsed by anymail, with every tracking
request's events stored together by `esp_events_record` (instead of one signal per event).

Whatever anymail raises while it authenticates or reads a request becomes an answer here, never
a 500: a missing setting is a 403, a failed authentication or an unreadable payload a 400, and
nothing is written. Only a failure on our side (the database) or of an upstream API is a 5xx,
which the ESP retries. anymail's other webhooks (inbound, Mandrill's combined one) get the same
answers and keep anymail's signals.

Amazon SES posts through Amazon SNS, whose signatures anymail does not check: its view verifies
the topic, the certificate's URL and the signature before anything is parsed or confirmed.
"""

import json
import logging

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailError, AnymailWebhookValidationFailure
from anymail.signals import tracking
from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from botocore.exceptions import BotoCoreError, ClientError
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern

from mailqueue.metrics.recording import esp_events_count
from tracking.esp_events import esp_events_record
from tracking.sns import sns_message_verify, sns_subscription_confirm

logger = logging.getLogger(__name__)

# What a request anymail cannot read raises while it is validated or parsed: anymail's own
# errors (AnymailInvalidAddress, "Unknown SNS message type", ...), JSON and decoding errors
# (ValueError), and the lookups of a payload of the wrong shape.
PAYLOAD_ERRORS = (AnymailError, ValueError, KeyError, TypeError, AttributeError, IndexError)

# An upstream API failing while a payload is read (SES inbound mail downloaded from S3, an SNS
# subscription confirmed) is no fault of the request: it stays a 5xx, so the ESP retries.
UPSTREAM_ERRORS = (OSError, BotoCoreError, ClientError)


def _not_configured(esp: str) -> JsonResponse:
    """The 403 of a webhook whose settings are missing: it cannot tell who is posting."""
    return JsonResponse(
        {
            "detail": f"The {esp} webhook is not configured: set ANYMAIL_WEBHOOK_SECRET "
            "(or the ESP's signing key)."
        },
        status=403,
    )


class GuardedWebhookMixin:
    """anymail's webhook view, answering 403/400 for what anymail raises before events are
    handled (see the module docstring); `handle_events` does what the view is for."""

    # The ESP's name in our URLs and rows (`postmark`, `amazon_ses`), set per view class.
    esp: str = ""
    # What anymail raised while the view was built (it reads its settings then, per request).
    configuration_error: ImproperlyConfigured | None = None

    def __init__(self, **kwargs: object) -> None:
        """anymail's view, or the configuration error that kept it from being built."""
        try:
            super().__init__(**kwargs)
        except ImproperlyConfigured as exc:
            # A missing setting must refuse the request, not fail it: post() answers 403.
            self.configuration_error = exc

    def is_open_to_anyone(self) -> bool:
        """Whether the configuration lets anyone post (never refused here by default)."""
        return False

    def verify_payload(self, request: HttpRequest) -> None:
        """Checks beyond anymail's validators, after them; none by default."""

    def handle_events(self, events: list) -> None:
        """Send anymail's signal for each event, as anymail's own view does."""
        for event in events:
            self.signal.send(sender=self.__class__, event=event, esp_name=self.esp_name)

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        """Authenticate and parse the request, then handle its events."""
        if self.configuration_error is not None:
            logger.warning("%s webhook refused: %s", self.esp, self.configuration_error)
            return _not_configured(self.esp)
        if self.is_open_to_anyone():
            return _not_configured(self.esp)
        try:
            self.run_validators(request)
            self.verify_payload(request)
            events = self.parse_events(request)
        except UPSTREAM_ERRORS:
            raise
        except ImproperlyConfigured as exc:
            # A setting anymail reads only when a request comes (Mandrill's key), or a payload
            # that shows the ESP posts to the wrong URL (inbound events to a tracking webhook).
            logger.warning("%s webhook refused: %s", self.esp, exc)
            return _not_configured(self.esp)
        except AnymailWebhookValidationFailure:
            return JsonResponse(
                {"detail": f"The {self.esp} webhook request failed authentication."}, status=400
            )
        except PAYLOAD_ERRORS:
            return JsonResponse(
                {"detail": f"The {self.esp} webhook payload could not be parsed."}, status=400
            )
        self.handle_events(events)
        return HttpResponse()


class StoredTrackingMixin(GuardedWebhookMixin):
    """Stores all the events of one tracking webhook request with a constant number of queries.

    A webhook with no way to authenticate (no WEBHOOK_SECRET and no ESP signature configured)
    is a 403: anymail would only warn and accept anyone's events, which could suppress any
    address. A database error is a 500, so the ESP retries.
    """

    def is_open_to_anyone(self) -> bool:
        """anymail's own test for "this webhook is open to anyone on the web"."""
        return bool(self.warn_if_no_basic_auth and not self.basic_auth)

    def handle_events(self, events: list) -> None:
        """Store the request's events together (anymail's tracking signal is not sent) and
        count the ones stored."""
        esp_events_count(esp=self.esp, events=esp_events_record(esp=self.esp, events=events))


class AmazonSESTrackingWebhook(StoredTrackingMixin, AmazonSESTrackingWebhookView):
    """SES events through SNS: topic, certificate URL and signature checked first."""

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


def _our_view(esp: str, view_class: type, stored: bool) -> type:
    """anymail's view for an ESP, storing its tracking events or only guarded."""
    if stored and esp == AmazonSESTrackingWebhook.esp:
        return AmazonSESTrackingWebhook
    mixin = StoredTrackingMixin if stored else GuardedWebhookMixin
    return type(view_class.__name__, (mixin, view_class), {"esp": esp})


def webhook_views() -> list[tuple[URLPattern, type]]:
    """Every webhook URL of anymail with our view for it: tracking webhooks store their events
    (Mandrill's combined tracking+inbound view keeps anymail's signals), all are guarded."""
    views = []
    for pattern in anymail_urls.urlpatterns:
        view_class = getattr(pattern.callback, "view_class", None)
        name = pattern.name or ""
        if view_class is None or not name.endswith("_webhook"):
            continue
        esp = name.removesuffix("_webhook").removesuffix("_tracking").removesuffix("_inbound")
        stored = (
            name.endswith("_tracking_webhook") and getattr(view_class, "signal", None) is tracking
        )
        views.append((pattern, _our_view(esp, view_class, stored)))
    return views
