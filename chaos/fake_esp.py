"""Local stand-ins for the two ends of the circuit breaker scenario: an ESP's HTTP API and an
SMTP server, both recording the Message-ID of every message they took and when.

`FakePostmark` answers Postmark's `POST /email` the way Postmark does (anymail's `postmark`
backend is pointed at it with ANYMAIL_POSTMARK_API_URL): 200 with a MessageID, or, while
`failing` is set, 503 like an ESP in an outage. It is the only thing faked: the workers, anymail,
requests and Django's SMTP backend all run for real.
"""

import json
import threading
import time
import uuid
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from chaos.services import free_port


@dataclass(frozen=True)
class Call:
    """One request that reached a server: when, its answer, the message's Message-ID."""

    at: float
    status: int
    message_id: str


def _header(headers: list[dict], name: str) -> str:
    for header in headers or ():
        if str(header.get("Name", "")).lower() == name.lower():
            return str(header.get("Value", ""))
    return ""


class FakePostmark:
    """Postmark's send API on 127.0.0.1: every call is recorded in `calls`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.failing = False
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                message_id = _header(payload.get("Headers"), "Message-ID").strip("<>")
                status, body = fake.answer(payload)
                with fake._lock:
                    fake.calls.append(Call(time.time(), status, message_id))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args) -> None:
                """Quiet: the scenario prints its own figures."""

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL anymail's postmark backend is given (ANYMAIL_POSTMARK_API_URL)."""
        return f"http://127.0.0.1:{self.port}/"

    def answer(self, payload: dict) -> tuple[int, dict]:
        """Postmark's answer: 503 while failing, else accepted with a MessageID."""
        if self.failing:
            return 503, {"ErrorCode": 503, "Message": "Service unavailable (chaos)"}
        return 200, {
            "To": payload.get("To", ""),
            "SubmittedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "MessageID": str(uuid.uuid4()),
            "ErrorCode": 0,
            "Message": "OK",
        }

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[Call]:
        """The calls so far."""
        with self._lock:
            return list(self.calls)


class RecordingSmtp:
    """An SMTP server on 127.0.0.1 that accepts everything and records each Message-ID."""

    def __init__(self) -> None:
        self.port = free_port()
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:
        """Record the message's Message-ID and accept it."""
        headers = BytesHeaderParser().parsebytes(envelope.content)
        message_id = str(headers.get("Message-ID", "")).strip().strip("<>")
        with self._lock:
            self.calls.append(Call(time.time(), 250, message_id))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        """Serve in a background thread."""
        self.controller.start()

    def stop(self) -> None:
        """Stop serving."""
        self.controller.stop()

    def snapshot(self) -> list[Call]:
        """The messages so far."""
        with self._lock:
            return list(self.calls)
