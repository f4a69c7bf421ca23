"""Errors of topics and subscriptions, answered by the API's one exception handler."""

from mailqueue.errors import MailqueueError


class SubscriptionConflict(MailqueueError):
    """The address cannot be (re-)subscribed as asked (HTTP 409): it unsubscribed, or it is
    under a hard-bounce or complaint suppression (`reason` names it)."""

    status_code = 409

    def __init__(self, message: str, *, field: str | None = "email", reason: str = "") -> None:
        super().__init__(message, field=field)
        self.reason = reason

    def as_dict(self) -> dict:
        """The field's message, plus `reason` when a suppression is why."""
        body = super().as_dict()
        if self.reason:
            body["reason"] = self.reason
        return body
