"""The HTML rewrite of open and click tracking: only hrefs change, the pixel goes last."""

import re
from html.parser import HTMLParser
from uuid import uuid4

import pytest

from tracking.engagement import click_token_read, html_track, open_token_read

PUBLIC = "https://mq.example.com"

DOCUMENT = """<!DOCTYPE html>
<html><head><style>a[href="https://style.example/"] { color: red; }</style></head>
<BODY class="x">
<!-- <a href="https://comment.example/">not a link</a> -->
<p>Hi <A HREF='https://shop.example/order?id=1&amp;ref=mail' class="btn">your order</A>,
<a title=' href="https://trap.example/" ' href = https://unquoted.example/x>unquoted</a>
<a href="mailto:help@shop.example">mail us</a> <a href="tel:+123">call</a>
<a href="#top">top</a> <a href="/relative">relative</a> <a name="anchor">no href</a>
<a href="https://mq.example.com/u/some-token/">unsubscribe</a>
<a href="  http://plain.example/ünï  ">plain</a></p>
<script>var s = '<a href="https://script.example/">';</script>
</BODY></html>
"""


class _Visible(HTMLParser):
    """The text a reader sees and how many links they can click."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.links = 0
        self.images: list[dict] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag == "a" and dict(attrs).get("href") is not None:
            self.links += 1
        if tag == "img":
            self.images.append(dict(attrs))
        if tag in {"script", "style"}:
            self.skip += 1

    def handle_endtag(self, tag):
        if tag in {"script", "style"}:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.text.append(data)


def _visible(document: str) -> _Visible:
    parser = _Visible()
    parser.feed(document)
    parser.close()
    return parser


@pytest.fixture(autouse=True)
def _public_url(settings):
    settings.MAILQUEUE_PUBLIC_URL = PUBLIC + "/"


def test_only_http_links_are_rewritten_and_everything_else_stays_byte_identical():
    email_id = uuid4()
    tracked = html_track(email_id=email_id, document=DOCUMENT, opens=False, clicks=True)

    assert tracked.links == [
        (0, "https://shop.example/order?id=1&ref=mail"),
        (1, "https://unquoted.example/x"),
        (2, "http://plain.example/ünï"),
    ]
    hrefs = re.findall(r'(?i)href\s*=\s*"(https://mq\.example\.com/t/c/[^"]+)"', tracked.html)
    assert len(hrefs) == 3
    for position, href in enumerate(hrefs):
        token = href.removeprefix(f"{PUBLIC}/t/c/").removesuffix("/")
        assert click_token_read(token=token) == (email_id, position)
    # Put the original values back: the document is the one we were given, byte for byte.
    restored = tracked.html
    for original, href in zip(
        [
            "'https://shop.example/order?id=1&amp;ref=mail'",
            "https://unquoted.example/x",
            '"  http://plain.example/ünï  "',
        ],
        hrefs,
        strict=True,
    ):
        restored = restored.replace(f'"{href}"', original, 1)
    assert restored == DOCUMENT
    # What a reader sees is unchanged: same text, same number of links.
    before, after = _visible(DOCUMENT), _visible(tracked.html)
    assert "".join(after.text) == "".join(before.text)
    assert after.links == before.links


def test_the_pixel_goes_right_before_the_body_end():
    email_id = uuid4()
    tracked = html_track(email_id=email_id, document=DOCUMENT, opens=True, clicks=False)

    assert tracked.links == []
    head, _, tail = tracked.html.rpartition("</BODY>")
    assert tail == "</html>\n"
    assert head.startswith(DOCUMENT[: DOCUMENT.rindex("</BODY>")])
    [pixel] = _visible(tracked.html).images
    assert (pixel["width"], pixel["height"], pixel["alt"]) == ("1", "1", "")
    token = pixel["src"].removeprefix(f"{PUBLIC}/t/o/").removesuffix("/")
    assert open_token_read(token=token) == email_id
    assert "".join(_visible(tracked.html).text) == "".join(_visible(DOCUMENT).text)


def test_a_fragment_without_body_gets_the_pixel_at_its_end():
    tracked = html_track(
        email_id=uuid4(),
        document="<p>Hi <a href='https://x.example'>x</a></p>",
        opens=True,
        clicks=True,
    )
    assert tracked.html.startswith('<p>Hi <a href="https://mq.example.com/t/c/')
    assert tracked.html.endswith('style="border:0;width:1px;height:1px">')


def test_tokens_are_refused_when_altered_or_of_the_other_kind():
    email_id = uuid4()
    tracked = html_track(
        email_id=email_id, document="<a href='https://x.example'>x</a>", opens=True, clicks=True
    )
    click = re.search(r"/t/c/([^/]+)/", tracked.html).group(1)
    pixel = re.search(r"/t/o/([^/]+)/", tracked.html).group(1)
    assert click_token_read(token=click) == (email_id, 0)
    assert open_token_read(token=pixel) == email_id
    assert click_token_read(token=pixel) is None
    assert open_token_read(token=click) is None
    value, _, signature = click.rpartition(".")
    assert click_token_read(token=f"{value[:-1]}1.{signature}") is None
    other = "A" if signature[-10] != "A" else "B"
    assert click_token_read(token=f"{value}.{signature[:-10]}{other}{signature[-9:]}") is None
    assert click_token_read(token="x" * 5000) is None
    assert open_token_read(token="") is None
