"""Fixtures of outbound webhook tests: a real HTTP receiver, a fresh endpoints cache."""

import json
import threading
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


@pytest.fixture(autouse=True)
def _fresh_subscriptions():
    """Each test reads the endpoints it made, not a copy cached by an earlier test."""
    webhook_subscriptions_forget()
    yield
    webhook_subscriptions_forget()
