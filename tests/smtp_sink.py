"""A real SMTP server for tests, built on aiosmtpd, whose answers a test can script."""

import socket
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller


@dataclass
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    peer: tuple
    # The bytes as received (signatures are checked over these, not a re-serialization).
    raw: bytes = b""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpSink:
    """Accepts everything unless told otherwise.

    `rcpt_replies[address]` answers RCPT for that address (e.g. "550 5.1.1 No such user");
    `data_replies` is a list of answers to give to the next DATA commands (e.g. "451 Try later").
    """

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.messages: list[Received] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: list[str] = []
        self.sessions: set[tuple] = set()
        self.controller = Controller(self, hostname=self.host, port=self.port)

    def start(self) -> None:
        """Start serving in a background thread."""
        self.controller.start()

    def stop(self) -> None:
        """Stop serving."""
        self.controller.stop()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Refuse scripted recipients, accept the rest."""
        self.sessions.add(session.peer)
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        """Store the message, or give the next scripted answer."""
        if self.data_replies:
            return self.data_replies.pop(0)
        self.messages.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=message_from_bytes(envelope.content, policy=policy.default),
                peer=session.peer,
                raw=envelope.content,
            )
        )
        return "250 Message accepted for delivery"
