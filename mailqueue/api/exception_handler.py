"""One place that turns exceptions into HTTP answers for the API."""

import logging

from django.db import InterfaceError, OperationalError
from redis.exceptions import RedisError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from mailqueue.errors import MailqueueError

logger = logging.getLogger(__name__)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """MailqueueError -> its status with field-level messages (and Retry-After when it has
    `retry_after`); outages -> 503; else DRF's."""
    if isinstance(exc, MailqueueError):
        response = Response(exc.as_dict(), status=exc.status_code)
        # An error that says when to come back (a rate limit) says it in Retry-After too.
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response["Retry-After"] = str(retry_after)
        return response
    # Only a lost or refused connection is an outage; any other database error is a bug (500).
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.exception("database error while serving the API")
        return Response(
            {"detail": "The database is unavailable; nothing was changed. Try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    if isinstance(exc, RedisError):
        logger.exception("Redis error while serving the API")
        return Response(
            {"detail": "Redis is unavailable. Try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return exception_handler(exc, context)
