"""`Authorization: Bearer mq_<prefix>_<secret>` authentication and scope permissions."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission

from mailqueue.models import ApiKey
from mailqueue.services import api_key_authenticate


def test_key_refuse(api_key: ApiKey, *, what: str) -> None:
    """403 for a test key asking for `what`: something that sends later, outside the request
    (a schedule's runs, an event rule's emails), which could not be kept to the simulator."""
    if api_key.is_test:
        raise exceptions.PermissionDenied(
            f"A test key cannot {what}: it would send real email later. Use a live key."
        )


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticates a request by API key; request.user and request.auth are the ApiKey."""

    keyword = "Bearer"

    def authenticate(self, request) -> tuple[ApiKey, ApiKey] | None:
        """Return (key, key) for a valid key; raise 401 for a malformed or unknown one."""
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != self.keyword.lower().encode():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <api key>'.")
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer <api key>'."
            )
        try:
            token = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        api_key = api_key_authenticate(token=token)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return api_key, api_key

    def authenticate_header(self, request) -> str:
        """Makes DRF answer 401 (not 403) with a WWW-Authenticate challenge."""
        return f'{self.keyword} realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents the key as an HTTP Bearer scheme, so Swagger UI's Authorize button sends it."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema) -> dict:
        """OpenAPI security scheme of an API key."""
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "mq_<prefix>_<secret>",
            "description": "An API key from `manage.py create_api_key`.",
        }


class HasScope(BasePermission):
    """Requires the API key to carry one of the scopes the view asks for this method."""

    def has_permission(self, request, view) -> bool:
        """True if the key holds a needed scope; 403 naming it if not; 405 for a method not offered.

        A method the view names no scope for is refused for every key with 405, not 403: no
        key could be allowed it, so "Method Not Allowed" (with an Allow header listing the
        offered methods) is the truth, and it is what an unimplemented method answers anyway.
        """
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            raise exceptions.NotAuthenticated("Authentication credentials were not provided.")
        scopes = view.scopes_for(request.method)
        if not scopes:
            raise exceptions.MethodNotAllowed(request.method)
        if not set(scopes) & set(api_key.scopes):
            needed = "' or '".join(scopes)
            raise exceptions.PermissionDenied(f"This API key lacks the '{needed}' scope.")
        return True
