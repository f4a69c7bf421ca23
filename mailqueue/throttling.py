"""Per-API-key throttling, off unless MAILQUEUE_API_THROTTLE_RATE is set (e.g. `100/s`)."""

from rest_framework.throttling import SimpleRateThrottle

from mailqueue import conf
from mailqueue.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Limits requests per API key using Django's cache."""

    scope = "api_key"

    def get_rate(self) -> str | None:
        """The configured rate, read at request time."""
        return conf.api_throttle_rate()

    def allow_request(self, request, view) -> bool:
        """Skip throttling entirely when no rate is configured."""
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view) -> str | None:
        """One bucket per key."""
        if isinstance(request.auth, ApiKey):
            return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}
        return None
