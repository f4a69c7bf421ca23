"""The JSON parser's limits: hostile bodies are a 400 (or 413) that says why, never a 500.

Deep nesting, huge numbers, NaN and Infinity, duplicate keys, invalid UTF-8, lone surrogates,
NUL characters, charsets other than UTF-8 (a "zlib" charset would inflate a small body past the
size limit) and bodies over MAILQUEUE_MAX_BODY_BYTES.
"""

import json
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailqueue.models import EmailJob
from tests.hypothesis_profiles import examples

EMAILS = "/api/v1/emails/"
ENDPOINTS = [EMAILS, "/api/v1/batches/", "/api/v1/templates/", "/api/v1/suppressions/"]
VALID = {"to": "ada@example.com", "subject": "Hi", "text": "Hello"}
NESTED_40: object = 1
for _ in range(40):
    NESTED_40 = [NESTED_40]


def post(api, body: bytes, *, url: str = EMAILS, content_type: str = "application/json"):
    """POST raw bytes."""
    return api.generic("POST", url, data=body, content_type=content_type)


def message_of(response) -> str:
    """Every message of an error answer, as one string."""
    return json.dumps(response.json())


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "detail", "nested too deeply"),
        (
            json.dumps({**VALID, "metadata": {"a": NESTED_40}}).encode(),
            "metadata",
            "Nested deeper than 32 levels",
        ),
        (
            b'{"to": "ada@example.com", "subject": "Hi", "text": "t", "metadata": {"n": 1e400}}',
            "metadata",
            "Number out of range",
        ),
        (
            b'{"to": "ada@example.com", "subject": "Hi", "text": "t", "metadata": {"n": -1e999}}',
            "metadata",
            "Number out of range",
        ),
        (
            b'{"to": "ada@example.com", "metadata": {"n": ' + b"9" * 5000 + b"}}",
            "detail",
            "integer of 5000 digits is too large",
        ),
        (
            b'{"to": "ada@example.com", "metadata": {"n": NaN}}',
            "detail",
            "NaN is not a JSON number",
        ),
        (
            b'{"to": "ada@example.com", "metadata": {"n": Infinity}}',
            "detail",
            "Infinity is not a JSON number",
        ),
        (
            b'{"to": "ada@example.com", "metadata": {"n": -Infinity}}',
            "detail",
            "-Infinity is not a JSON number",
        ),
        (
            b'{"to": "ada@example.com", "to": "evil@example.com", "subject": "s", "text": "t"}',
            "detail",
            "The key 'to' appears twice",
        ),
        (
            b'{"to": "ada@example.com", "metadata": {"a": 1, "a": 2}}',
            "detail",
            "The key 'a' appears twice",
        ),
        (b'{"to": "ada@example.com", "subject": "\xff\xfe"}', "detail", "not valid UTF-8"),
        (b'{"to": "ada@example.com", "subject": "\xed\xa0\x80"}', "detail", "not valid UTF-8"),
        (
            b'{"to": "ada@example.com", "subject": "Hi \\ud800", "text": "t"}',
            "subject",
            "unpaired UTF-16 surrogate",
        ),
        (
            b'{"to": "ada@example.com", "subject": "Hi", "text": "a\\u0000b"}',
            "text",
            "NUL character",
        ),
        (b'\xef\xbb\xbf{"to": "ada@example.com"}', "detail", "JSON parse error"),
        (b"", "to", "required"),
        (b"{", "detail", "JSON parse error"),
    ],
)
def test_hostile_json_is_a_400_that_names_the_problem(api, body, field, reason):
    """Each hostile body: 400, keyed by the field (or `detail`), saying what is wrong."""
    response = post(api, body)

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert reason in message_of(response)
    assert not EmailJob.objects.exists()


@pytest.mark.parametrize("charset", ["zlib", "rot13", "hex", "base64", "utf-16", "latin-1"])
def test_a_charset_other_than_utf8_is_refused_before_decoding(api, charset):
    """JSON is UTF-8: a "zlib" charset must not inflate a 10 kB body into 10 MB, "rot13" must
    not crash the parser."""
    bomb = zlib.compress(json.dumps({**VALID, "text": "x" * 10_000_000}).encode())
    body = bomb if charset == "zlib" else json.dumps(VALID).encode()

    response = post(api, body, content_type=f"application/json; charset={charset}")

    assert response.status_code == 400
    assert "must be UTF-8" in response.json()["detail"]
    assert not EmailJob.objects.exists()


def test_utf8_named_any_way_is_accepted(api, settings):
    """`charset=UTF8` or `utf-8` is the same encoding: the email is accepted."""
    settings.MAILQUEUE_SENDER_DOMAINS_REQUIRED = False
    for charset in ("utf-8", "UTF8"):
        response = post(
            api, json.dumps(VALID).encode(), content_type=f"application/json; charset={charset}"
        )
        assert response.status_code == 202, response.content


def test_a_body_over_the_limit_is_a_413_that_says_the_limit(api, settings):
    """The declared length is checked before anything is read."""
    settings.MAILQUEUE_MAX_BODY_BYTES = 1000

    response = post(api, json.dumps({**VALID, "text": "x" * 2000}).encode())

    assert response.status_code == 413
    assert "the limit is 1000 bytes" in response.json()["detail"]


# Splices that make otherwise ordinary JSON hostile.
SPLICES = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "9" * 5000,
    "1" * 400,
    "0.1e-99999",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    "[" * 50 + "]" * 50,
    "[" * 5000 + "]" * 5000,
    '{"a": 1, "a": 2}',
    '"\\x"',
    "tru",
    "",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=15,
)


@st.composite
def hostile_bodies(draw) -> bytes:
    """A JSON email body with one value replaced by a hostile splice, maybe with raw bytes."""
    body = {
        **VALID,
        **draw(
            st.dictionaries(
                st.sampled_from(["metadata", "context"]), json_values.map(lambda v: {"v": v})
            )
        ),
    }
    text = json.dumps(body)
    marker = '"Hello"'
    splice = draw(st.sampled_from(SPLICES) | json_values.map(json.dumps))
    data = text.replace(marker, splice, 1).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.binary(max_size=4)) + data[position:]
    return data


@settings(max_examples=examples())
@given(body=hostile_bodies() | st.binary(max_size=200), url=st.sampled_from(ENDPOINTS))
@example(body=b'{"to": "ada@example.com", "subject": "Hi", "text": 1e400}', url=EMAILS)
@example(body=b'{"to": "ada@example.com", "subject": "Hi", "text": "\xc3"}', url=EMAILS)
def test_no_body_makes_a_server_error(api, settings, body, url):
    """Whatever the bytes: an answer below 500 in JSON with a message, never a server error."""
    settings.MAILQUEUE_SENDER_DOMAINS_REQUIRED = False
    response = post(api, body, url=url)

    assert response.status_code < 500, response.content
    assert response["Content-Type"] == "application/json"
    if response.status_code >= 400:
        assert response.json(), "an error answer says what is wrong"
