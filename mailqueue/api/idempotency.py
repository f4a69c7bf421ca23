"""Wraps a create operation so repeats with the same Idempotency-Key replay the first answer."""

from collections.abc import Callable

from rest_framework.request import Request
from rest_framework.response import Response

from mailqueue.models import ApiKey
from mailqueue.services import StoredResponse, idempotency_run, request_fingerprint

IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotent_create(request: Request, create: Callable[[], tuple[int, dict, str]]) -> Response:
    """Run `create` (returns status, body, location) once per client and key."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        # No record to keep in step with the work: the create service's own transaction is
        # enough (an outer one would only add two savepoint round trips to every request).
        status, body, location = create()
        return _response(status, body, location)
    api_key: ApiKey = request.auth

    def work() -> StoredResponse:
        return StoredResponse(*create())

    fingerprint = request_fingerprint(method=request.method, path=request.path, body=request.data)
    answer, replayed = idempotency_run(
        client=api_key.client, key=key, fingerprint=fingerprint, work=work, test=api_key.is_test
    )
    response = _response(answer.status, answer.body, answer.location)
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def _response(status: int, body: dict, location: str) -> Response:
    response = Response(body, status=status)
    if location:
        response["Location"] = location
    return response
