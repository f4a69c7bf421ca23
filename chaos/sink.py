"""The chaos scenario's SMTP server: records each message's Message-ID, arrival time and sender.

Addresses shape the answers: `defer-*` is refused with `451` the first two times it is tried
(then accepted), `fail-*` is refused with `550` (the email is meant to end `failed`), anything
else is accepted. Each SMTP connection is traced back to the worker process that opened it
(through /proc), so a message received twice can be pinned on the worker that sent it first.
"""

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser

from aiosmtpd.controller import Controller

from chaos.services import free_port

DEFER_PREFIX = "defer-"
FAIL_PREFIX = "fail-"
DEFERRALS = 2


@dataclass(frozen=True)
class Arrival:
    """One message the server accepted: whose Message-ID, when, from which worker process."""

    message_id: str
    arrived_at: float
    pid: int | None
    recipients: tuple[str, ...]


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the TCP socket 127.0.0.1:local_port -> :remote_port (from /proc/net/tcp)."""
    wanted = (f"{local_port:04X}", f"{remote_port:04X}")
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if (fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]) == wanted:
                    return fields[9]
    except OSError:
        return None
    return None


def socket_owner(local_port: int, remote_port: int, pids: list[int]) -> int | None:
    """Which of the processes holds the client end of a TCP connection to this server."""
    inode = _socket_inode(local_port, remote_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


class ChaosSink:
    """An aiosmtpd server on its own port that scripts answers by address and records arrivals.

    `candidate_pids` returns the worker processes alive now; a connection is attributed once,
    when it greets (EHLO).
    """

    def __init__(self, candidate_pids: Callable[[], list[int]]) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.candidate_pids = candidate_pids
        self.arrivals: list[Arrival] = []
        self.deferred: dict[str, int] = {}
        self.refused = 0
        self.unattributed_sessions = 0
        self._lock = threading.Lock()
        self._parser = BytesHeaderParser()
        self.controller = Controller(self, hostname=self.host, port=self.port)

    def start(self) -> None:
        """Serve in a background thread."""
        self.controller.start()

    def stop(self) -> None:
        """Stop serving."""
        self.controller.stop()

    def _attribute(self, session) -> int | None:
        pid = getattr(session, "chaos_pid", 0)
        if pid == 0:
            pid = socket_owner(session.peer[1], self.port, self.candidate_pids())
            session.chaos_pid = pid
            if pid is None:
                self.unattributed_sessions += 1
        return pid

    async def handle_EHLO(self, server, session, envelope, hostname, responses) -> list[str]:
        """Attribute the connection as soon as it greets, while its worker surely lives."""
        session.host_name = hostname
        self._attribute(session)
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        """Refuse `fail-*` for good and `defer-*` the first two times; accept the rest."""
        self._attribute(session)
        local = address.lower()
        if local.startswith(FAIL_PREFIX):
            with self._lock:
                self.refused += 1
            return "550 5.1.1 No such user (chaos: meant to fail)"
        if local.startswith(DEFER_PREFIX):
            with self._lock:
                seen = self.deferred.get(local, 0)
                if seen < DEFERRALS:
                    self.deferred[local] = seen + 1
                    return "451 4.3.0 Try again later (chaos: deferred)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        """Record the Message-ID, the time and the sending worker, then accept."""
        headers = self._parser.parsebytes(envelope.content)
        message_id = (headers.get("Message-ID") or "").strip().strip("<>")
        arrival = Arrival(
            message_id=message_id,
            arrived_at=time.time(),
            pid=self._attribute(session),
            recipients=tuple(envelope.rcpt_tos),
        )
        with self._lock:
            self.arrivals.append(arrival)
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[Arrival]:
        """The arrivals so far."""
        with self._lock:
            return list(self.arrivals)
