"""Wraps a create operation so repeats with the same Idempotency-Key replay the first answer."""

from collections.abc import Callable

from django.db import transaction
from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.models import ApiKey
from mailqueue.services import (
    idempotency_begin,
    idempotency_complete,
    idempotency_release,
    request_fingerprint,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotent_create(request: Request, create: Callable[[], tuple[int, dict, str]]) -> Response:
    """Run `create` (atomic itself; returns status, body, location) once per client and key."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        # No record to keep in step with the work: the create service's own transaction is
        # enough (an outer one would only add two savepoint round trips to every request).
        status, body, location = create()
        return _response(status, body, location)
    api_key: ApiKey = request.auth
    fingerprint = request_fingerprint(method=request.method, path=request.path, body=request.data)
    record, stored = idempotency_begin(client=api_key.client, key=key, fingerprint=fingerprint)
    if stored is not None:
        response = _response(stored.status, stored.body, stored.location)
        response["Idempotent-Replayed"] = "true"
        return response
    try:
        with transaction.atomic():
            status, body, location = create()
            idempotency_complete(record=record, status=status, body=body, location=location)
    except BaseException:
        idempotency_release(record=record)
        raise
    return _response(status, body, location)


def _response(status: int, body: dict, location: str) -> Response:
    response = Response(body, status=status)
    if location:
        response["Location"] = location
    return response
