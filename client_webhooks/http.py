"""One POST of a webhook body to a checked address, within a deadline, without following
redirects.

A per-read timeout alone lets a receiver that answers one byte at a time hold a worker for as
long as it likes (each read waits less than the timeout), so every call also has a deadline for
the whole exchange: connecting, the TLS handshake, sending, the status line and headers, and the
first EXCERPT_BYTES of the body. When it passes, a watchdog thread shuts the socket down, which
wakes the call wherever it is blocked, and the attempt counts as a failure.
"""

import contextlib
import functools
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import certifi

from client_webhooks.addresses import WebhookTarget

CONNECT_TIMEOUT_SECONDS = 5.0
# The longest wait for any one read.
READ_TIMEOUT_SECONDS = 5.0
# The whole call; read when a call starts.
DEADLINE_SECONDS = 10.0
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
        """A complete 2xx answer: the receiver took the event. Anything else (3xx, an answer cut
        off by the deadline) is retried."""
        return not self.error and self.status_code is not None and 200 <= self.status_code < 300


class _DeadlineExceeded(Exception):
    """The call's deadline passed (between two reads, or before a step started)."""


class _Deadline:
    """A call's deadline: how long each step may wait, and a watchdog that shuts the call's
    socket down when the deadline passes."""

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.ends = self.started + seconds
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def wait(self, most: float) -> float:
        """The timeout for the next step: `most`, or less when the deadline is nearer."""
        remaining = self.ends - time.monotonic()
        if remaining <= 0:
            raise _DeadlineExceeded
        return min(most, remaining)

    def watch(self, sock: socket.socket) -> None:
        """Shut this socket down at the deadline (and close it when the call ends)."""
        with self._lock:
            self._socket = sock
            if self.expired:
                _shutdown(sock)

    def finish(self) -> bool:
        """Stop the watchdog and close the socket; whether the deadline passed first."""
        self._timer.cancel()
        with self._lock:
            sock, self._socket = self._socket, None
            expired = self.expired
        if sock is not None:
            sock.close()
        return expired

    def elapsed_ms(self) -> int:
        """Milliseconds since the call started."""
        return int((time.monotonic() - self.started) * 1000)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._socket is not None:
                _shutdown(self._socket)


def _shutdown(sock: socket.socket) -> None:
    """End both directions at the TCP level: a read blocked in another thread returns at once."""
    # Not connected yet, or already closed: then nothing is blocked on it.
    with contextlib.suppress(OSError):
        # The plain socket's method, also for a TLS one: SSLSocket.shutdown would drop its TLS
        # state under the thread that is reading.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificates verified against certifi's CAs and the URL's host name."""
    return ssl.create_default_context(cafile=certifi.where())


def _connect(target: WebhookTarget, deadline: _Deadline) -> socket.socket:
    """A socket connected to the checked address, TLS-wrapped for https (SNI and certificate
    check against the name)."""
    # The address that was checked, never the name, which could resolve elsewhere now.
    sock = socket.create_connection(
        (target.address, target.port), timeout=deadline.wait(CONNECT_TIMEOUT_SECONDS)
    )
    deadline.watch(sock)
    sock.settimeout(deadline.wait(READ_TIMEOUT_SECONDS))
    if target.scheme != "https":
        return sock
    tls = _tls_context().wrap_socket(
        sock, server_hostname=target.host, do_handshake_on_connect=False
    )
    deadline.watch(tls)
    tls.do_handshake()
    return tls


def _excerpt(response: http.client.HTTPResponse, deadline: _Deadline) -> bytes:
    """The body's first EXCERPT_BYTES, read a chunk at a time with the deadline checked between
    reads; the rest is never read."""
    chunks: list[bytes] = []
    size = 0
    while size < EXCERPT_BYTES:
        deadline.wait(READ_TIMEOUT_SECONDS)
        chunk = response.read1(EXCERPT_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def webhook_post(*, target: WebhookTarget, body: bytes, headers: dict[str, str]) -> WebhookAnswer:
    """POST `body` to the target's checked address, naming its host in Host and TLS SNI; the
    answer must be complete within DEADLINE_SECONDS."""
    deadline = _Deadline(DEADLINE_SECONDS)
    connection = http.client.HTTPConnection(target.address, target.port)
    response = None
    status_code, excerpt, error, cut_off = None, b"", "", False
    try:
        connection.sock = _connect(target, deadline)
        connection.request(
            "POST", target.target, body=body, headers={**headers, "Host": target.host_header}
        )
        response = connection.getresponse()
        status_code = response.status
        excerpt = _excerpt(response, deadline)
    except _DeadlineExceeded:
        cut_off = True
    except (OSError, http.client.HTTPException) as exc:
        # Connection refused or reset, TLS or certificate error, timeout, malformed answer.
        error = f"{type(exc).__name__}: {exc}"
    finally:
        # The watchdog is stopped before anything is judged, so a late shutdown cannot cut an
        # answer that was already taken as complete.
        expired = deadline.finish()
        if response is not None:
            response.close()
        connection.close()
    if cut_off or expired:
        # Whatever the shut socket raised (or the partial answer it left) was the deadline.
        error = f"DeadlineExceeded: no complete answer within {DEADLINE_SECONDS:g} s"
    return WebhookAnswer(
        status_code=status_code,
        excerpt=excerpt.decode("utf-8", "replace"),
        error=error[:1000],
        duration_ms=deadline.elapsed_ms(),
    )
