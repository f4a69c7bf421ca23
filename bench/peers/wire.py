"""The wire peer: prebuilt messages sent with smtplib over one reused connection.

This is as fast as one Python process can hand messages to the SMTP sink; no database, no
rendering. It bounds every other contestant from above (and shows whether the sink is the
bottleneck: see the sink's CPU share in the report).
"""

import smtplib
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from bench.lib import workload


def build(count: int) -> list[tuple[str, bytes]]:
    """count small multipart messages (text + HTML), as bytes ready to send."""
    messages = []
    for number in range(count):
        subject, text, html = workload.rendered(number)
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = workload.FROM_EMAIL
        message["To"] = workload.address(number)
        message["Date"] = formatdate()
        message["Message-ID"] = make_msgid(domain="example.com")
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        messages.append((workload.address(number), message.as_bytes()))
    return messages


def send(messages: list[tuple[str, bytes]], *, port: int) -> float:
    """Send the messages over one SMTP connection; seconds from connect to QUIT."""
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for recipient, body in messages:
            smtp.sendmail("bench@example.com", [recipient], body)
    return time.perf_counter() - started
