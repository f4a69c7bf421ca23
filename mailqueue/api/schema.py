"""OpenAPI documentation of the error answers, in the shapes the exception handler gives them.

Every API view answers more than its success: a missing key is a 401, a key without the scope a
403, an outage a 503, and so on. `ApiAutoSchema` adds those answers to each operation from facts
the schema generator already knows (a request body, a path parameter), so a client generated
from /api/schema/ expects every status the server can send; a view adds the answers only it
gives (409, 422, 400 on query parameters) through `@extend_schema(responses=...)`.
"""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

# {"detail": "..."}: DRF's shape for an error that is about the request, not one field.
ERROR_SCHEMA = {
    "type": "object",
    "description": "An error about the request as a whole.",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
# {"field": ["message", ...]}: what a serializer or a MailqueueError with a field answers. A list
# of objects holds per-item errors (`attachments`, `recipients`); an object holds a nested
# serializer's errors; `detail` or `non_field_errors` is about the body as a whole.
FIELD_ERRORS_SCHEMA = {
    "type": "object",
    "description": (
        "Each key names the field that was refused (`recipients[1].context`, `headers.X-Foo`), "
        "or is `detail` / `non_field_errors` for the body as a whole; each value says why."
    ),
    "additionalProperties": {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {}},
            {"type": "object"},
        ]
    },
}

UNAUTHORIZED = "No API key, or a malformed, unknown or revoked one (`Authorization: Bearer ...`)."
FORBIDDEN = "The API key lacks the scope this operation needs; the message names it."
NOT_FOUND = "No such resource for the calling client."
BAD_INPUT = "Bad input: the body names each refused field and why."
TOO_LARGE = "The request body is larger than MAILQUEUE_MAX_BODY_BYTES."
UNSUPPORTED_MEDIA = "The body is not `application/json`."
THROTTLED = "This API key sent more than MAILQUEUE_API_THROTTLE_RATE allows; see Retry-After."
UNAVAILABLE = "PostgreSQL or Redis is unavailable; nothing was changed. Try again shortly."


def error_response(description: str) -> OpenApiResponse:
    """An error answer with a `detail` message, for `@extend_schema(responses=...)`."""
    return OpenApiResponse(response={"$ref": "#/components/schemas/Error"}, description=description)


def field_errors_response(description: str) -> OpenApiResponse:
    """An error answer keyed by field, for `@extend_schema(responses=...)`."""
    return OpenApiResponse(
        response={"$ref": "#/components/schemas/FieldErrors"}, description=description
    )


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error answers every operation of this API can give."""

    def _get_response_bodies(self, direction: str = "response") -> dict:
        """The documented success answers, then every error answer the view did not declare."""
        self._register_error_components()
        responses = super()._get_response_bodies(direction)
        for code, answer in self._common_errors().items():
            if code not in responses:
                responses[code] = self._get_response_for_code(answer, code, direction=direction)
        return responses

    def _get_serializer_field_meta(self, field, direction: str) -> dict:
        """Also state that a required-text input field refuses "" (DRF's allow_blank=False).

        drf-spectacular says so only with COMPONENT_SPLIT_REQUEST; this API never shares a
        serializer between a request and a response, so the request components can say it.
        """
        meta = super()._get_serializer_field_meta(field, direction)
        if (
            direction == "request"
            and isinstance(field, serializers.CharField)
            and not field.allow_blank
            and not field.read_only
        ):
            meta["minLength"] = max(meta.get("minLength", 0), 1)
        return meta

    def _common_errors(self) -> dict[str, OpenApiResponse]:
        """Errors that follow from what the operation takes: a key, a body, a path parameter."""
        errors = {
            "401": error_response(UNAUTHORIZED),
            "403": error_response(FORBIDDEN),
            "429": error_response(THROTTLED),
            "503": error_response(UNAVAILABLE),
        }
        if "{" in self.path:
            errors["404"] = error_response(NOT_FOUND)
        # Only these methods carry a body here (asking a GET view would log a guessing error).
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            errors["400"] = field_errors_response(BAD_INPUT)
            errors["413"] = error_response(TOO_LARGE)
            errors["415"] = error_response(UNSUPPORTED_MEDIA)
        return dict(sorted(errors.items()))

    def _register_error_components(self) -> None:
        for name, schema in (("Error", ERROR_SCHEMA), ("FieldErrors", FIELD_ERRORS_SCHEMA)):
            self.registry.register_on_missing(
                ResolvedComponent(
                    name=name, type=ResolvedComponent.SCHEMA, schema=schema, object=name
                )
            )
