"""Inline images: an attachment with a `content_id` becomes a part the HTML shows as cid:."""

import base64

import pytest

from mailqueue.models import EmailAttachment
from tests.helpers import run_worker

EMAILS = "/api/v1/emails/"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _email(**attachment) -> dict:
    return {
        "to": ["reader@example.com"],
        "subject": "Our logo",
        "html": '<p>Hello <img src="cid:logo@mailqueue"></p>',
        "text": "Hello",
        "attachments": [
            {"filename": "logo.png", "content": base64.b64encode(PNG).decode(), **attachment},
            {"filename": "terms.txt", "content": base64.b64encode(b"terms").decode()},
        ],
    }


def test_inline_image_reaches_the_smtp_server_as_an_inline_part(
    api, smtp_sink, django_capture_on_commit_callbacks
):
    """The part carries the Content-ID and an inline disposition; the other stays an attachment."""
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(EMAILS, _email(content_id="logo@mailqueue"), format="json")
    assert response.status_code == 202
    stored = EmailAttachment.objects.get(email_id=response.json()["id"], filename="logo.png")
    assert stored.content_id == "logo@mailqueue"

    run_worker()

    (received,) = smtp_sink.messages
    parts = {part.get_filename(): part for part in received.message.walk() if part.get_filename()}
    logo, terms = parts["logo.png"], parts["terms.txt"]
    assert logo["Content-ID"] == "<logo@mailqueue>"
    assert logo.get_content_disposition() == "inline"
    assert logo.get_content_type() == "image/png"
    assert logo.get_payload(decode=True) == PNG
    assert terms["Content-ID"] is None
    assert terms.get_content_disposition() == "attachment"
    # multipart/mixed [ multipart/related [ multipart/alternative [text, html], image ], file ]:
    # every mail program looks for cid: images beside the HTML, in the related part.
    message = received.message
    assert message.get_content_type() == "multipart/mixed"
    related, attachment = message.get_payload()
    assert related.get_content_type() == "multipart/related"
    assert [part.get_content_type() for part in related.get_payload()] == [
        "multipart/alternative",
        "image/png",
    ]
    assert attachment.get_filename() == "terms.txt"


@pytest.mark.parametrize(
    "content_id", ["<logo@mailqueue>", "two words", "a\r\nBcc: x@example.com", "a@b@c", ""]
)
def test_content_id_that_could_break_the_header_is_refused(api, content_id):
    """Brackets, spaces, line breaks and a second @ are a 400 naming the attachment's field."""
    response = api.post(EMAILS, _email(content_id=content_id), format="json")

    assert response.status_code == 400
    assert "content_id" in str(response.json())
    assert not EmailAttachment.objects.exists()
