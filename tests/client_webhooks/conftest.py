"""Fixtures of outbound webhook tests: real HTTP receivers (one that answers at once, one that
answers a byte at a time), a fresh endpoints cache."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from client_webhooks.selectors import webhook_subscriptions_forget


class Receiver:
    """A local HTTP server that records every POST and answers with `status`."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"received" if receiver.status < 400 else b"boom")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/mailqueue"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def payloads(self) -> list[dict]:
        """The JSON bodies received so far."""
        return [json.loads(request["body"]) for request in self.requests]


@pytest.fixture
def receiver(settings):
    """A running receiver, with private addresses and http allowed for webhooks."""
    settings.MAILQUEUE_WEBHOOK_ALLOW_PRIVATE = True
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


class Trickler:
    """A local HTTP server that answers a POST one byte every `interval` seconds, for far
    longer than any deadline: from the first byte of its status line (`phase="headers"`), or in
    its body after a complete 200 status and headers (`phase="body"`)."""

    def __init__(self, *, phase: str, interval: float = 0.5, total_bytes: int = 60) -> None:
        self.requests = 0
        self.bytes_sent = 0
        # Set when a write fails: the caller has hung up.
        self.hung_up = threading.Event()
        trickler = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                trickler.requests += 1
                if phase == "body":
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    drip = b"x" * total_bytes
                else:
                    drip = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * total_bytes
                for byte in drip:
                    try:
                        self.wfile.write(bytes([byte]))
                    except OSError:
                        trickler.hung_up.set()
                        return
                    trickler.bytes_sent += 1
                    time.sleep(interval)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/slow"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def trickler_for(settings):
    """Start a Trickler for a phase; private addresses and http are allowed for webhooks."""
    settings.MAILQUEUE_WEBHOOK_ALLOW_PRIVATE = True
    started: list[Trickler] = []

    def start(phase: str) -> Trickler:
        server = Trickler(phase=phase)
        server.thread.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture(autouse=True)
def _fresh_subscriptions():
    """Each test reads the endpoints it made, not a copy cached by an earlier test."""
    webhook_subscriptions_forget()
    yield
    webhook_subscriptions_forget()
