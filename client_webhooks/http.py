"""One POST of a webhook body to a checked address, without following redirects."""

import time
from dataclasses import dataclass

import certifi
import urllib3

from client_webhooks.addresses import WebhookTarget

TIMEOUT_SECONDS = 5.0
EXCERPT_BYTES = 1000


@dataclass(frozen=True)
class WebhookAnswer:
    """What one POST came to: the status (None without an answer), its first bytes, an error."""

    status_code: int | None
    excerpt: str
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        """A 2xx answer: the receiver took the event. Anything else (3xx too) is retried."""
        return self.status_code is not None and 200 <= self.status_code < 300


def webhook_post(*, target: WebhookTarget, body: bytes, headers: dict[str, str]) -> WebhookAnswer:
    """POST `body` to the target's checked address, naming its host in Host and TLS SNI."""
    # The pool connects to the address that was checked, never to the name, which could resolve
    # elsewhere now; the certificate is still verified against the name.
    pool_kwargs = {
        "port": target.port,
        "timeout": urllib3.Timeout(TIMEOUT_SECONDS),
        "retries": False,
    }
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            **pool_kwargs,
        )
    else:
        pool = urllib3.HTTPConnectionPool(target.address, **pool_kwargs)
    started = time.monotonic()
    try:
        response = pool.urlopen(
            "POST",
            target.target,
            body=body,
            headers={**headers, "Host": target.host_header},
            redirect=False,
            retries=False,
            assert_same_host=False,
            preload_content=False,
        )
        try:
            excerpt = response.read(EXCERPT_BYTES, decode_content=False)
        finally:
            response.release_conn()
        return WebhookAnswer(
            status_code=response.status,
            excerpt=excerpt.decode("utf-8", "replace"),
            error="",
            duration_ms=_elapsed_ms(started),
        )
    except urllib3.exceptions.HTTPError as exc:
        # Connection refused or reset, TLS or certificate error, timeout: no answer.
        return WebhookAnswer(None, "", f"{type(exc).__name__}: {exc}"[:1000], _elapsed_ms(started))
    finally:
        pool.close()


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
