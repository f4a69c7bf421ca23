"""Property tests: no text a client sends can add a header or a recipient to a message.

Arbitrary text (control characters, CR/LF/NUL, U+2028/U+0085, encoded words, commas and quotes,
IDN domains, quoted local parts, very long strings) goes into to/cc/bcc/reply_to/from_email,
the subject, custom headers and attachment names. Each value is either refused with a 400 that
names the field, or the message built from it, serialized to bytes as the SMTP provider sends
them (Django's builder and our fast path both), parses back with exactly the headers we set and
exactly the intended recipients, in the headers and in the envelope.
"""

import email
import email.policy
import re
import uuid

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailqueue.api.serializers import EmailCreateInputSerializer
from mailqueue.errors import TemplateRenderError
from mailqueue.models import EmailAttachment, EmailJob
from mailqueue.providers.mime import fast_message_bytes
from mailqueue.providers.smtp import _envelope_address
from mailqueue.services.delivery import email_build_message
from mailqueue.validation import normalize_address
from templates_app.rendering import RenderedContent, render_subject
from tests.hypothesis_profiles import examples

# Pieces that break naive header handling; the generators splice them into arbitrary text.
NASTY = [
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1e",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\t",
    " ",
    ",",
    ";",
    ":",
    '"',
    "\\",
    "<",
    ">",
    "@",
    "(",
    ")",
    "[",
    "]",
    "é",
    "用户",
    "Bcc: evil@evil.example",
    "\r\nBcc: evil@evil.example",
    "\nTo: evil@evil.example",
    "=?utf-8?q?=0D=0ABcc:_evil@evil.example?=",
    "=?utf-8?b?DQpCY2M6IGV2aWxAZXZpbC5leGFtcGxl?=",
    "evil@evil.example",
]
nasty_text = st.lists(st.one_of(st.text(max_size=6), st.sampled_from(NASTY)), max_size=8).map(
    "".join
)
long_text = st.builds(lambda piece, times: piece * times, nasty_text, st.integers(50, 400))
any_text = st.one_of(nasty_text, long_text, st.text())

LOCAL_PARTS = ["ada", "a.b+tag", '"a b"', '"a\\"b"', '"ab"', '"a@b"', "用户", ".ada", "a..b"]
DOMAINS = [
    "example.com",
    "bücher.de",
    "例子.广告",
    "xn--bcher-kva.de",
    "[127.0.0.1]",
    "a..b",
    "-a.com",
]


@st.composite
def addresses(draw) -> str:
    """An address built from a display name, a local part and a domain, each maybe hostile."""
    local = draw(st.sampled_from(LOCAL_PARTS) | nasty_text)
    domain = draw(st.sampled_from(DOMAINS) | nasty_text)
    name = draw(st.none() | nasty_text)
    spec = f"{local}@{domain}"
    style = draw(st.sampled_from(["bare", "angle", "quoted"]))
    if name is None or style == "bare":
        return spec
    if style == "quoted":
        return f'"{name}" <{spec}>'
    return f"{name} <{spec}>"


any_address = st.one_of(addresses(), any_text)
HEADER_NAMES = ["X-Campaign", "X-Entity-Ref-ID", "In-Reply-To", "List-Id", "Bcc", "Subject"]
header_names = st.sampled_from(HEADER_NAMES) | nasty_text


def mailbox(address: str) -> tuple[str, str]:
    """(local part, lowercased domain) of an address as email's strict parser reads it."""
    parsed = email.headerregistry.Address(addr_spec=email.utils.parseaddr(address)[1])
    return parsed.username, parsed.domain.lower()


def mailboxes(message: email.message.EmailMessage, name: str) -> list[tuple[str, str]]:
    """The mailboxes of every `name` header of a parsed message."""
    return [
        (address.username, address.domain.lower())
        for header in message.get_all(name, [])
        for address in header.addresses
    ]


def squeeze(text: str) -> str:
    """Text with runs of whitespace as one space (header folding may change whitespace)."""
    return " ".join(text.split())


HEADER_LINE = re.compile(rb"[!-9;-~]+:")


def assert_sent_safely(data: bytes, *, email_job: EmailJob, subject: str) -> None:
    """The serialized message has exactly our headers, each on its own line(s), and exactly
    the intended recipients."""
    head, separator, _ = data.partition(b"\r\n\r\n")
    assert separator, "no end of the header section"
    assert b"\x00" not in head
    assert head.isascii(), "non-ASCII bytes in the header section"
    for line in head.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line, line
        assert HEADER_LINE.match(line) or line[:1] in (b" ", b"\t"), line
        assert not re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", line), line
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    expected = {"content-type", "mime-version", "content-transfer-encoding", "subject", "from"}
    expected |= {"to", "date", "message-id"}
    expected |= {"cc"} if email_job.cc else set()
    expected |= {"reply-to"} if email_job.reply_to else set()
    expected |= {name.lower() for name in email_job.headers}
    names = [name.lower() for name, _ in parsed.items()]
    assert sorted(names) == sorted(expected), "headers were added, lost or doubled"
    assert mailboxes(parsed, "To") == [mailbox(a) for a in email_job.to]
    assert mailboxes(parsed, "Cc") == [mailbox(a) for a in email_job.cc]
    assert mailboxes(parsed, "Reply-To") == [mailbox(a) for a in email_job.reply_to]
    assert mailboxes(parsed, "From") == [mailbox(email_job.from_email)]
    # A literal encoded word (`=?utf-8?q?...?=`) is decoded by the parser: compare the rest.
    if "=?" not in subject:
        assert squeeze(str(parsed["Subject"])) == squeeze(subject)
    for name, value in email_job.headers.items():
        if "=?" not in value:
            assert squeeze(str(parsed[name])) == squeeze(value)


def build_and_check(email_job: EmailJob, subject: str) -> None:
    """Build the message as the worker does and check both serializations and the envelope."""
    email_job.attachment_rows = []
    content = RenderedContent(subject=subject, html="", text="Hello")
    message = email_build_message(email=email_job, content=content)
    envelope = [mailbox(_envelope_address(a, "utf-8")) for a in message.recipients()]
    intended = [mailbox(a) for a in [*email_job.to, *email_job.cc, *email_job.bcc]]
    assert envelope == intended, "the envelope goes to other recipients"
    assert mailbox(_envelope_address(message.from_email, "utf-8")) == mailbox(email_job.from_email)
    assert_sent_safely(
        message.message().as_bytes(linesep="\r\n"), email_job=email_job, subject=subject
    )
    fast = fast_message_bytes(message)
    if fast is not None:
        assert_sent_safely(fast, email_job=email_job, subject=subject)


def validate(body: dict) -> tuple[dict | None, dict]:
    """The serializer's validated data (or None) and its errors."""
    serializer = EmailCreateInputSerializer(data=body)
    if serializer.is_valid():
        return serializer.validated_data, {}
    return None, serializer.errors


def job_from(data: dict) -> EmailJob:
    """An unsaved email with the validated fields, as the worker would load it."""
    return EmailJob(
        id=uuid.uuid4(),
        to=data["to"],
        cc=data.get("cc", []),
        bcc=data.get("bcc", []),
        reply_to=data.get("reply_to", []),
        from_email=data.get("from_email") or "Mailqueue <noreply@example.com>",
        subject=data.get("subject", ""),
        headers=data.get("headers", {}),
        transactional=True,
        tags=[],
        metadata={},
    )


ADDRESS_FIELDS = ["to", "cc", "bcc", "reply_to", "from_email"]


@settings(max_examples=examples(3))
@given(field=st.sampled_from(ADDRESS_FIELDS), value=any_address, as_list=st.booleans())
@example(field="to", value="x@bücher.de", as_list=False)
@example(field="cc", value='"a b"@example.com', as_list=True)
@example(field="to", value="用户@例子.广告", as_list=False)
@example(field="reply_to", value='"Doe, John" <john@example.com>', as_list=True)
@example(field="from_email", value="=?utf-8?q?=0D=0ABcc:_x@evil.example?= <a@x.com>", as_list=False)
@example(field="to", value="ada@example.com\u2028Bcc: evil@evil.example", as_list=False)
@example(field="bcc", value="Ada\x0bBcc: evil@evil.example <ada@example.com>", as_list=False)
def test_any_address_is_refused_by_name_or_reaches_only_its_mailbox(field, value, as_list):
    """An address is a 400 on its field, or the built message goes to exactly that mailbox."""
    as_list = as_list and field != "from_email"
    body = {
        "to": "ada@example.com",
        "subject": "Hi",
        "text": "t",
        field: [value] if as_list else value,
    }
    data, errors = validate(body)
    if data is None:
        assert field in errors, errors
        assert all(isinstance(message, str) and message for message in errors[field])
        return
    address = data[field] if field == "from_email" else data[field][0]
    assert len(address) <= 320 or field != "from_email"
    build_and_check(job_from(data), "Hi")


@settings(max_examples=examples(2))
@given(subject=any_text, header_name=header_names, header_value=any_text)
@example(subject="Hi\x0bBcc: evil@evil.example", header_name="X-Campaign", header_value="x")
@example(subject="Hi", header_name="X-Campaign", header_value="v\x1cCc: evil@evil.example")
@example(subject="Hi\u2028Bcc: evil@evil.example", header_name="X-A", header_value="é\x85x")
@example(subject="Grüße " * 40, header_name="In-Reply-To", header_value="<a@b.example>")
def test_any_subject_and_header_is_refused_by_name_or_stays_on_its_line(
    subject, header_name, header_value
):
    """Subject and custom headers: a 400 on the field, or exactly one header line each."""
    body = {
        "to": "ada@example.com",
        "subject": subject,
        "text": "t",
        "headers": {header_name: header_value},
    }
    data, errors = validate(body)
    if data is None:
        assert set(errors) <= {"subject", "headers"}, errors
        return
    build_and_check(job_from(data), data["subject"])


@settings(max_examples=examples(2))
@given(value=any_text)
@example(value="Ada\r\nBcc: evil@evil.example")
@example(value="Ada\x0bBcc: evil@evil.example")
@example(value="Ada\x00\x01\x7f\x85\u2028\u2029 Lovelace")
def test_a_template_subject_is_one_clean_line_whatever_the_context(value):
    """What a context value puts into a rendered subject cannot end the Subject line."""
    try:
        subject = render_subject(source="Hello {{ name }}!", context={"name": value})
    except TemplateRenderError as exc:  # the one documented refusal: over 998 characters
        assert "998" in exc.message
        return
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", subject)
    assert len(subject) <= 998
    job = job_from({"to": ["ada@example.com"]})
    build_and_check(job, subject)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("x@bücher.de", "x@xn--bcher-kva.de"),
        ("Zoë <zoe@Bücher.de>", "=?utf-8?q?Zo=C3=AB?= <zoe@xn--bcher-kva.de>"),
        ('"a\\"b"@example.com', '"a\\"b"@example.com'),
        ('"Doe, John" <john@example.com>', '"Doe, John" <john@example.com>'),
    ],
)
def test_idn_domains_are_stored_in_punycode_and_quoted_local_parts_kept(raw, stored):
    """An IDN domain becomes its punycode form, as it goes into the envelope and headers."""
    assert normalize_address(raw, field="to") == stored


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("用户@例子.广告", "must be ASCII"),
        ('"a b"@example.com', "no spaces"),
        ("ada@example.com\x0b", "control characters"),
        ("Ada\u2028 <ada@example.com>", "line separators"),
        ("a@example.com, b@example.com", "one address per list item"),
    ],
)
def test_refused_address_forms_say_why(raw, reason):
    """SMTPUTF8 local parts, spaces in quotes, control characters, two addresses: refused."""
    _, errors = validate({"to": [raw], "subject": "s", "text": "t"})

    assert reason in errors["to"][0]
    assert errors["to"][0].startswith("to[0]: ")


@pytest.mark.django_db
@settings(max_examples=examples(0.25))
@given(field=st.sampled_from(ADDRESS_FIELDS), value=any_address, subject=nasty_text)
@example(field="cc", value="x@bücher.de", subject="Hi\x0bBcc: evil@evil.example")
@example(field="to", value='"a\\"b"@example.com', subject="Hi")
def test_through_the_api_an_email_is_refused_by_field_or_stored_safe_to_send(
    api, settings, field, value, subject
):
    """POST /api/v1/emails/: a 400 naming the field, or a stored email that sends safely."""
    settings.MAILQUEUE_SENDER_DOMAINS_REQUIRED = False
    body = {"to": "ada@example.com", "subject": subject or "Hi", "text": "t", field: value}
    response = api.post("/api/v1/emails/", body, format="json")
    if response.status_code == 400:
        assert set(response.json()) <= {field, "subject"}, response.json()
        return
    assert response.status_code == 202, response.content
    stored = EmailJob.objects.get(pk=response.json()["id"])
    if not stored.from_email:
        stored.from_email = "Mailqueue <noreply@example.com>"
    build_and_check(stored, stored.subject)


PART_HEADERS = {
    "content-type",
    "mime-version",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
}


@settings(max_examples=examples())
@given(filename=any_text, mimetype=st.none() | st.sampled_from(["text/plain"]) | nasty_text)
@example(filename="a.txt\x0bContent-Type: text/html", mimetype=None)
@example(filename="résumé \u2028.pdf", mimetype="application/pdf")
@example(filename="a.txt", mimetype="text/plain\x1cBcc: evil@evil.example")
def test_an_attachment_name_or_type_is_refused_by_name_or_stays_in_its_part(filename, mimetype):
    """Attachment file names and types: a 400 on `attachments`, or one attachment part whose
    headers are only MIME's and whose file name is the one given."""
    attachment = {"filename": filename, "content": "aGVsbG8="}
    if mimetype is not None:
        attachment["mimetype"] = mimetype
    body = {"to": "ada@example.com", "subject": "Hi", "text": "t", "attachments": [attachment]}
    data, errors = validate(body)
    if data is None:
        assert set(errors) == {"attachments"}, errors
        return
    job = job_from(data)
    job.attachment_rows = [
        EmailAttachment(filename=a.filename, content=a.content, mimetype=a.mimetype)
        for a in data["attachments"]
    ]
    message = email_build_message(
        email=job, content=RenderedContent(subject="Hi", html="", text="Hello")
    )
    parsed = email.message_from_bytes(
        message.message().as_bytes(linesep="\r\n"), policy=email.policy.default
    )

    assert mailboxes(parsed, "To") == [("ada", "example.com")]
    assert [name.lower() for name, _ in parsed.items()].count("bcc") == 0
    parts = [part for part in parsed.walk() if not part.is_multipart()]
    assert len(parts) == 2, "the attachment was split or lost"
    for part in parts:
        assert {name.lower() for name, _ in part.items()} <= PART_HEADERS
    assert parts[1].get_filename() == data["attachments"][0].filename
    assert parts[1].get_content() in (b"hello", "hello")
