"""The real `manage.py smtpd`: AUTH with an API key, messages stored before the 250, their MIME
structure kept, limits enforced, 451 while the database is away, and a worker delivering the
result; with Python's smtplib and with swaks."""

import base64
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.db import connection

from mailqueue.errors import ValidationFailed
from mailqueue.models import ApiKey, EmailAttachment, EmailJob
from mailqueue.services import api_key_create
from mailqueue.smtpd.parsing import message_parse
from tests.helpers import run_worker
from tests.live import PROJECT_DIR, live_env, process_logs, processes, wait_until

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
SENDER = "noreply@localhost"  # the default sender's address: allowed for every client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=2) as client:
            return client.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False


@pytest.fixture
def keys(db):
    """A key with scope send, and one without it, of the client `tools`."""
    sender = api_key_create(client_name="tools", scopes=["send"]).plaintext
    reader = api_key_create(client_name="tools", scopes=["read"]).plaintext
    return sender, reader


@pytest.fixture
def smtpd(tmp_path):
    """Start the real command with the given settings; yields a function returning its port."""
    started = []

    def start(**settings: str) -> int:
        port = _free_port()
        env = live_env(**settings)
        context = processes([["smtpd", "--host", "127.0.0.1", "--port", str(port)]], env, tmp_path)
        context.__enter__()
        started.append(context)
        wait_until(lambda: _answers(port), timeout=30, what="smtpd to answer", logs=tmp_path)
        return port

    yield start
    for context in started:
        context.__exit__(None, None, None)


def _message(**headers: str) -> EmailMessage:
    """A message with text, HTML, an inline image and an attachment."""
    message = EmailMessage()
    message["From"] = f"Tools <{SENDER}>"
    message["To"] = "Ann <ann@example.com>"
    message["Cc"] = "bob@example.com"
    message["Subject"] = "Nightly report"
    message["Message-ID"] = make_msgid(domain="tools.example")
    for name, value in headers.items():
        message[name] = value
    message.set_content("Report attached.")
    message.add_alternative('<p>Report <img src="cid:chart@tools"></p>', subtype="html")
    message.get_payload()[1].add_related(PNG, "image", "png", cid="<chart@tools>")
    message.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="report.csv")
    return message


@pytest.mark.django_db(transaction=True)
def test_submitted_message_is_stored_then_delivered_with_its_structure(
    keys, smtpd, smtp_sink, tmp_path
):
    """250 carries the email's id; the envelope's extra recipient is a Bcc; priority and tags
    come from the X-Mailqueue headers, which are dropped; the worker delivers the same parts."""
    port = smtpd(MAILQUEUE_SMTPD_ALLOW_PLAIN_AUTH="1")
    message = _message(
        **{"X-Mailqueue-Priority": "high", "X-Mailqueue-Tags": "nightly, reports"},
        **{"X-Report-Id": "r-17", "User-Agent": "cron/1.0"},
    )

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.login("tools", keys[0])
        rcpt = ["ann@example.com", "bob@example.com", "audit@example.com"]
        client.send_message(message, to_addrs=rcpt)
        # The same message again (a client that lost our answer): the same email, not a second.
        client.send_message(message, to_addrs=rcpt)

    email = EmailJob.objects.get()
    assert email.priority == "high"
    assert sorted(email.tags) == ["nightly", "reports"]
    assert email.to == ["Ann <ann@example.com>"]
    assert email.cc == ["bob@example.com"]
    assert email.bcc == ["audit@example.com"]
    assert email.headers == {"X-Report-Id": "r-17"}
    inline = EmailAttachment.objects.get(email=email, content_id="chart@tools")
    assert bytes(inline.content) == PNG

    run_worker()

    (received,) = smtp_sink.messages
    assert sorted(received.rcpt_tos) == sorted(rcpt)
    delivered = received.message
    assert delivered["X-Report-Id"] == "r-17"
    assert delivered["X-Mailqueue-Priority"] is None and delivered["User-Agent"] is None
    assert delivered["Bcc"] is None
    assert delivered.get_body(("plain",)).get_content().strip() == "Report attached."
    assert "cid:chart@tools" in delivered.get_body(("html",)).get_content()
    parts = {part.get_filename(): part for part in delivered.walk() if part.get_filename()}
    # A text part travels with CRLF line ends, as MIME's canonical form says.
    assert parts["report.csv"].get_payload(decode=True).replace(b"\r\n", b"\n") == b"a,b\n1,2\n"
    (image,) = [part for part in delivered.walk() if part["Content-ID"] == "<chart@tools>"]
    assert image.get_payload(decode=True) == PNG


@pytest.mark.django_db(transaction=True)
def test_auth_limits_and_policy_answers(keys, smtpd, tmp_path):
    """535 for a wrong key or one without scope send, 530 before AUTH, 452 past the recipient
    limit, 552 past the size limit, 554 naming the field for what the API would refuse."""
    port = smtpd(
        MAILQUEUE_SMTPD_ALLOW_PLAIN_AUTH="1",
        MAILQUEUE_SMTPD_MAX_RECIPIENTS="2",
        MAILQUEUE_SMTPD_MAX_MESSAGE_BYTES="20000",
    )
    sender, reader = keys
    for password in ("mq_nope_nope", reader):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login("tools", password)
            assert refused.value.smtp_code == 535
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        assert client.mail(SENDER)[0] == 530

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.login("tools", sender)
        client.mail(SENDER)
        assert client.rcpt("a@example.com")[0] == 250
        assert client.rcpt("b@example.com")[0] == 250
        assert client.rcpt("c@example.com")[0] == 452
        client.rset()
        with pytest.raises(smtplib.SMTPSenderRefused) as too_big:
            client.sendmail(SENDER, ["a@example.com"], b"Subject: x\r\n\r\n" + b"x" * 30000)
        assert too_big.value.smtp_code == 552
        client.rset()
        foreign = _message()
        del foreign["From"]
        foreign["From"] = "ceo@someone-else.example"
        with pytest.raises(smtplib.SMTPDataError) as policy:
            client.send_message(foreign, to_addrs=["ann@example.com"])
        assert policy.value.smtp_code == 554
        assert b"from_email" in policy.value.smtp_error
        no_subject = b"From: " + SENDER.encode() + b"\r\nTo: a@example.com\r\n\r\nHello\r\n"
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(SENDER, ["a@example.com"], no_subject)
        assert refused.value.smtp_code == 554
        assert b"subject" in refused.value.smtp_error.lower()

    assert not EmailJob.objects.exists()


def _allow_connections(database: str, allow: bool) -> None:
    """Let connections to the test database in, or keep them out and end the open ones but
    this test's own (from the `postgres` database: a database cannot lock itself out)."""
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"] or "postgres",
        password=settings["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                (own,) = cursor.fetchone()
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> %s",
                [database, own],
            )


@pytest.mark.django_db(transaction=True)
def test_database_away_is_451_and_the_retried_message_is_stored_once(keys, smtpd, tmp_path):
    """With PostgreSQL refusing the server's connections, DATA answers 451 (nothing stored);
    the same message sent again once it is back is stored once."""
    port = smtpd(MAILQUEUE_SMTPD_ALLOW_PLAIN_AUTH="1")
    database = connection.settings_dict["NAME"]
    message = _message()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.login("tools", keys[0])
        _allow_connections(database, False)
        try:
            with pytest.raises(smtplib.SMTPDataError) as away:
                client.send_message(message, to_addrs=["ann@example.com"])
            assert away.value.smtp_code == 451
        finally:
            _allow_connections(database, True)
        assert not EmailJob.objects.exists()
        client.send_message(message, to_addrs=["ann@example.com"])
        client.send_message(message, to_addrs=["ann@example.com"])
        # A key revoked while its session is open sends no more.
        ApiKey.objects.filter(client__name="tools").update(is_active=False)
        with pytest.raises(smtplib.SMTPDataError) as revoked:
            client.send_message(_message(), to_addrs=["ann@example.com"])
        assert revoked.value.smtp_code == 554

    assert EmailJob.objects.count() == 1, process_logs(tmp_path)


@pytest.mark.django_db(transaction=True)
def test_connection_limit_answers_421(keys, smtpd):
    """Past MAILQUEUE_SMTPD_MAX_CONNECTIONS a new connection is told to come back later."""
    port = smtpd(MAILQUEUE_SMTPD_ALLOW_PLAIN_AUTH="1", MAILQUEUE_SMTPD_MAX_CONNECTIONS="1")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as first:
        first.ehlo()
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", port, timeout=10)
        assert refused.value.smtp_code == 421
    wait_until(lambda: _answers(port), timeout=10, what="a free slot again", logs=PROJECT_DIR)


def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.mark.django_db(transaction=True)
def test_starttls_is_required_before_auth_and_swaks_can_send(keys, smtpd, tmp_path):
    """With a certificate, AUTH is refused until STARTTLS; swaks (an outside client) sends
    with STARTTLS and AUTH LOGIN, and the message is stored."""
    cert, key = _self_signed(tmp_path)
    port = smtpd(MAILQUEUE_SMTPD_TLS_CERT=cert, MAILQUEUE_SMTPD_TLS_KEY=key)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0t\0x").decode())
        assert code == 530
        client.starttls(context=ssl._create_unverified_context())
        client.ehlo()
        assert client.has_extn("auth")
        client.login("tools", keys[0])

    swaks = shutil.which("swaks")
    assert swaks, "swaks is installed by `make test` (scripts/ensure_services.sh swaks)"
    result = subprocess.run(
        [
            swaks,
            "--server", f"127.0.0.1:{port}",
            "--tls",
            "--auth", "LOGIN",
            "--auth-user", "tools",
            "--auth-password", keys[0],
            "--from", SENDER,
            "--to", "carol@example.com",
            "--header", "Subject: from swaks",
            "--header", "X-Mailqueue-Tags: swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Queued as" in result.stdout
    email = EmailJob.objects.get()
    assert email.subject == "from swaks"
    assert email.to == ["carol@example.com"]
    assert email.tags == ["swaks"]


def test_healthcheck_follows_the_server(smtpd, tmp_path, client, db):
    """`mailqueue_healthcheck smtpd` passes while the server answers on its port, and /health/
    counts the running server."""
    port = smtpd(MAILQUEUE_SMTPD_ALLOW_PLAIN_AUTH="1")
    assert client.get("/health/").json()["checks"]["smtpd"] == 1
    check = subprocess.run(
        [sys.executable, "manage.py", "mailqueue_healthcheck", "smtpd"],
        cwd=PROJECT_DIR,
        env=live_env(MAILQUEUE_SMTPD_PORT=str(port)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    down = subprocess.run(
        [sys.executable, "manage.py", "mailqueue_healthcheck", "smtpd"],
        cwd=PROJECT_DIR,
        env=live_env(MAILQUEUE_SMTPD_PORT=str(_free_port())),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1
    assert "not answering" in down.stderr


@pytest.mark.django_db
def test_bcc_only_and_repeated_recipients_parse_to_one_recipient_each():
    """`To: undisclosed-recipients:;` (Bcc-only mail) makes the first envelope recipient the
    To; an address named in To, Cc and again in another case is sent one copy."""
    raw = (
        f"From: {SENDER}\r\nTo: undisclosed-recipients:;\r\nSubject: hi\r\n\r\nHello\r\n"
    ).encode()
    parsed = message_parse(raw=raw, recipients=["a@example.com", "b@example.com"])
    assert (parsed.to, parsed.cc, parsed.bcc) == (["a@example.com"], [], ["b@example.com"])

    raw = (
        f"From: {SENDER}\r\nTo: b@example.com, B@example.com\r\nCc: b@example.com\r\n"
        "Subject: hi\r\n\r\nHello\r\n"
    ).encode()
    parsed = message_parse(raw=raw, recipients=["b@example.com"])
    assert (parsed.to, parsed.cc, parsed.bcc) == (["b@example.com"], [], [])


@pytest.mark.parametrize(
    "part_headers",
    [
        "Content-Type: image/png\r\nContent-Disposition: inline\r\nContent-ID: <a b@x>\r\n",
        "Content-Type: text/plain; charset=x-unknown-charset\r\n",
        "Content-Type: image/png\r\n"
        'Content-Disposition: attachment; filename="=?utf-8?q?a=0D=0ABcc:_x?="\r\n',
    ],
)
@pytest.mark.django_db
def test_a_message_that_cannot_be_sent_as_it_is_is_refused_for_good(part_headers):
    """A Content-ID with a space, an unknown charset, a file name hiding a line break: a
    ValidationFailed (554: retrying cannot help), never another exception (451 forever)."""
    raw = (
        f"From: {SENDER}\r\nTo: a@example.com\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n"
        f"--b\r\n{part_headers}Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--b--\r\n"
    ).encode()

    with pytest.raises(ValidationFailed):
        message_parse(raw=raw, recipients=["a@example.com"])
