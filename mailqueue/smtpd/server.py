"""The SMTP submission server: aiosmtpd speaks SMTP, a thread pool talks to the database.

Each message is stored by `submission_accept` before the server answers 250, so a message the
client saw accepted is in PostgreSQL; when the database is unreachable the answer is 451 and
the client keeps the message and retries. The asyncio loop never touches the ORM: the key check
and the store run in a small thread pool, so one slow query does not stall other sessions.
"""

import asyncio
import logging
import os
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections
from redis.exceptions import RedisError

from mailqueue import conf
from mailqueue.errors import IdempotencyConflict, MailqueueError
from mailqueue.liveness import SMTPD_KEY_TTL_SECONDS, SMTPD_SERVERS_KEY
from mailqueue.models import ApiKey
from mailqueue.scheduling import connection
from mailqueue.services.api_keys import api_key_authenticate
from mailqueue.services.submissions import submission_accept
from mailqueue.validation import has_forbidden_chars

logger = logging.getLogger(__name__)

TEMPORARY_AUTH_FAILURE = "454 4.7.0 Temporary authentication failure, try again later"
DATABASE_UNAVAILABLE = "451 4.3.0 Database unavailable, message not accepted: try again later"
NO_SEND_SCOPE = "535 5.7.8 Authentication credentials invalid (an API key with scope send)"
# The SMTP server's own threads: enough to overlap database waits, few enough to stay polite.
DATABASE_THREADS = 8
AUTH_TRIES = 5


@dataclass
class _Limits:
    """Per-process state shared by every session (touched only in the event loop's thread)."""

    max_connections: int
    max_recipients: int
    open: int = 0


def _key_for(password: str) -> ApiKey | None:
    """The active API key with scope `send` the password is, or None (runs in a pool thread)."""
    if "\x00" in password or not password.isprintable():
        return None  # not a key (and PostgreSQL would refuse the NUL)
    close_old_connections()
    try:
        api_key = api_key_authenticate(token=password)
    finally:
        close_old_connections()
    if api_key is None or ApiKey.Scope.SEND not in api_key.scopes:
        return None
    return api_key


def _accept(api_key: ApiKey, recipients: list[str], raw: bytes) -> tuple[str, bool]:
    """Store one message (runs in a pool thread); see `submission_accept`. The key is looked at
    again first: one revoked (or stripped of `send`) during a long session sends no more."""
    close_old_connections()
    try:
        current = ApiKey.objects.filter(pk=api_key.pk, is_active=True).values_list(
            "scopes", flat=True
        )
        scopes = next(iter(current), None)
        if scopes is None or ApiKey.Scope.SEND not in scopes:
            raise KeyRevoked("The API key was revoked or lost its `send` scope.")
        email_id, replayed = submission_accept(api_key=api_key, recipients=recipients, raw=raw)
    finally:
        close_old_connections()
    return str(email_id), replayed


class KeyRevoked(Exception):
    """The session's API key may no longer send."""


def _reply_text(message: str) -> str:
    """One line of reply text: no CR/LF/NUL (they would end the reply), at most 400 chars."""
    flat = " ".join(message.split())
    return flat[:400] if not has_forbidden_chars(flat) else "rejected"


class SubmissionHandler:
    """aiosmtpd hooks: recipient limits and storing the message."""

    def __init__(self, *, executor: ThreadPoolExecutor, limits: _Limits) -> None:
        self.executor = executor
        self.limits = limits

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        """Accept recipients up to MAILQUEUE_SMTPD_MAX_RECIPIENTS."""
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.limits.max_recipients})"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Store the message as an email; 250 only once it is committed."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        raw = envelope.original_content or envelope.content or b""
        try:
            email_id, replayed = await loop.run_in_executor(
                self.executor, _accept, session.auth_data, list(envelope.rcpt_tos), raw
            )
        except IdempotencyConflict:
            return "451 4.3.0 The same message is being stored by another session, try again"
        except KeyRevoked as exc:
            return f"554 5.7.8 {exc}"
        except MailqueueError as exc:
            where = f"{exc.field}: " if exc.field else ""
            return f"554 5.6.0 {_reply_text(where + exc.message)}"
        except (OperationalError, InterfaceError) as exc:
            logger.warning("smtpd: message not accepted, the database is unavailable (%s)", exc)
            return DATABASE_UNAVAILABLE
        except DatabaseError:
            # Refused by the database for what it holds (a value too long, say): retrying the
            # same message cannot help. A bug to fix, logged with its traceback.
            logger.exception("smtpd: message refused by the database")
            return "554 5.6.0 The message could not be stored as it is"
        except Exception:
            # A bug: logged with its traceback, and the client keeps the message and retries.
            logger.exception("smtpd: message not accepted, unexpected error")
            return "451 4.3.0 Internal error, message not accepted: try again later"
        # One line per message, like the API's `http.request` lines: ids and counts, no address.
        logger.info(
            "smtp submission %s",
            "replayed" if replayed else "accepted",
            extra={
                "event": "smtp.accepted",
                "log_fields": {
                    "email_id": email_id,
                    "client_id": session.auth_data.client_id,
                    "replayed": replayed,
                    "recipients": len(envelope.rcpt_tos),
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            },
        )
        return f"250 2.0.0 Queued as {email_id}"

    async def handle_exception(self, error: Exception) -> str:
        """Anything a hook did not handle: logged, and the client told to try again later (it
        keeps the message) rather than given the exception's text."""
        logger.error("smtpd: unexpected error in a session", exc_info=error)
        return "451 4.3.0 Internal error, try again later"


class SubmissionSMTP(SMTP):
    """aiosmtpd's SMTP with the key check off the event loop and a connection limit."""

    def __init__(
        self, handler: SubmissionHandler, *, executor: ThreadPoolExecutor, **kwargs
    ) -> None:
        super().__init__(handler, **kwargs)
        self._executor = executor
        self._limits = handler.limits
        self._over_limit = True  # until counted in connection_made

    # aiosmtpd parses AUTH PLAIN and LOGIN and then calls this synchronously, in the event loop:
    # it only hands the credentials on; `_checked` looks the key up in a pool thread.
    def _authenticate(self, mechanism: str, auth_data: LoginPassword) -> AuthResult:
        return AuthResult(success=True, handled=False, auth_data=auth_data)

    async def _checked(self, result: AuthResult) -> AuthResult:
        if not result.success or not isinstance(result.auth_data, LoginPassword):
            return result
        password = result.auth_data.password.decode("utf-8", "replace")
        loop = asyncio.get_running_loop()
        try:
            api_key = await loop.run_in_executor(self._executor, _key_for, password)
        except (OperationalError, InterfaceError) as exc:
            logger.warning("smtpd: AUTH not checked, the database is unavailable (%s)", exc)
            return AuthResult(success=False, handled=False, message=TEMPORARY_AUTH_FAILURE)
        if api_key is None:
            return AuthResult(success=False, handled=False, message=NO_SEND_SCOPE)
        return AuthResult(success=True, handled=False, auth_data=api_key)

    async def auth_PLAIN(self, _, args: list[str]) -> AuthResult:
        """AUTH PLAIN; the password is an API key."""
        return await self._checked(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _, args: list[str]) -> AuthResult:
        """AUTH LOGIN; the password is an API key."""
        return await self._checked(await super().auth_LOGIN(_, args))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # STARTTLS calls this again for the same session
        super().connection_made(transport)
        if first:
            self._over_limit = self._limits.open >= self._limits.max_connections
            if not self._over_limit:
                self._limits.open += 1

    def connection_lost(self, error: Exception | None) -> None:
        if not self._over_limit:
            self._limits.open -= 1
            self._over_limit = True
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._over_limit:
            await self.push("421 4.7.0 Too many connections, try again later")
            self.transport.close()
            return
        await super()._handle_client()


def tls_context() -> ssl.SSLContext | None:
    """The STARTTLS context from MAILQUEUE_SMTPD_TLS_CERT/KEY, or None when not configured."""
    cert, key = conf.smtpd_tls_cert(), conf.smtpd_tls_key()
    if not cert and not key:
        return None
    if not cert or not key:
        raise ImproperlyConfigured(
            "MAILQUEUE_SMTPD_TLS_CERT and MAILQUEUE_SMTPD_TLS_KEY must be set together."
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ImproperlyConfigured(f"MAILQUEUE_SMTPD_TLS_CERT/KEY cannot be loaded: {exc}") from exc
    return context


def server_factory(executor: ThreadPoolExecutor) -> "callable":
    """A protocol factory for `loop.create_server`, configured from the settings now."""
    context = tls_context()
    allow_plain = conf.smtpd_allow_plain_auth()
    if context is None and not allow_plain:
        raise ImproperlyConfigured(
            "The SMTP server needs TLS for AUTH: set MAILQUEUE_SMTPD_TLS_CERT and "
            "MAILQUEUE_SMTPD_TLS_KEY, or MAILQUEUE_SMTPD_ALLOW_PLAIN_AUTH=1 for local use."
        )
    limits = _Limits(
        max_connections=conf.smtpd_max_connections(), max_recipients=conf.smtpd_max_recipients()
    )
    handler = SubmissionHandler(executor=executor, limits=limits)
    options = {
        "executor": executor,
        "hostname": socket.getfqdn(),
        "ident": "Mailqueue SMTP submission",
        "data_size_limit": conf.smtpd_max_message_bytes(),
        "tls_context": context,
        "require_starttls": context is not None,
        "auth_required": True,
        "auth_require_tls": not allow_plain,
        # A few AUTH tries per connection (each costs a key lookup); no limit that matters to
        # a client sending many messages in one session.
        "command_call_limit": {"AUTH": AUTH_TRIES, "*": 1_000_000},
        # The raw bytes are parsed by the email package; aiosmtpd must not decode them.
        "decode_data": False,
    }
    return lambda: SubmissionSMTP(handler, **options)


class _Heartbeat:
    """Announces this server in Redis for /health/ and the container health check."""

    def __init__(self) -> None:
        self.key = f"{SMTPD_SERVERS_KEY}:{socket.gethostname()}:{os.getpid()}"

    def beat(self) -> None:
        try:
            redis = connection()
            with redis.pipeline() as pipe:
                pipe.hset(self.key, mapping={"hostname": socket.gethostname(), "at": time.time()})
                pipe.expire(self.key, SMTPD_KEY_TTL_SECONDS)
                pipe.sadd(SMTPD_SERVERS_KEY, self.key)
                pipe.execute()
        except RedisError as exc:
            # Submission works without Redis (the sweeper requests the deliveries later).
            logger.warning("smtpd: heartbeat not written, Redis is unavailable (%s)", exc)

    def forget(self) -> None:
        try:
            redis = connection()
            redis.delete(self.key)
            redis.srem(SMTPD_SERVERS_KEY, self.key)
        except RedisError:
            pass  # the key expires on its own


async def serve(
    *, host: str, port: int, stop: asyncio.Event, ready: "callable | None" = None
) -> None:
    """Serve until `stop` is set, then stop accepting and let open sessions finish (≤ 30 s)."""
    executor = ThreadPoolExecutor(max_workers=DATABASE_THREADS, thread_name_prefix="smtpd-db")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(server_factory(executor), host=host, port=port)
    heartbeat = _Heartbeat()
    await loop.run_in_executor(executor, heartbeat.beat)
    bound = server.sockets[0].getsockname()[1]
    logger.info("smtpd: listening on %s:%s", host, bound)
    if ready is not None:
        ready(bound)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=SMTPD_KEY_TTL_SECONDS / 3)
            except TimeoutError:
                await loop.run_in_executor(executor, heartbeat.beat)
    finally:
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), timeout=30)
        except TimeoutError:
            logger.warning("smtpd: sessions still open after 30 s; closing them")
        await loop.run_in_executor(executor, heartbeat.forget)
        executor.shutdown(wait=True)
