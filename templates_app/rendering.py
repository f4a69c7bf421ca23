"""Rendering of stored templates with the Django template language, in a locked-down engine."""

from dataclasses import dataclass
from functools import lru_cache

from django.template import (
    Context,
    Engine,
    Library,
    TemplateSyntaxError,
    defaultfilters,
    defaulttags,
)
from django.template.base import Template

from mailqueue.errors import TemplateRenderError

# RFC 5322's line limit, and the width of the stored subject column.
MAX_SUBJECT_LENGTH = 998


@dataclass(frozen=True)
class RenderedContent:
    """The three rendered parts of an email."""

    subject: str
    html: str
    text: str


# Built-in tags a stored template may use. Left out on purpose: include/extends/block (no
# files), load (no libraries), url (reveals routes), debug (dumps the context and modules),
# csrf_token and querystring (need a request).
ALLOWED_TAGS = (
    "autoescape",
    "comment",
    "cycle",
    "filter",
    "firstof",
    "for",
    "if",
    "ifchanged",
    "lorem",
    "now",
    "regroup",
    "resetcycle",
    "spaceless",
    "templatetag",
    "verbatim",
    "widthratio",
    "with",
)


@lru_cache(maxsize=1)
def _engine() -> Engine:
    # No loaders and a reduced set of built-in tags: a template cannot read files, load tag
    # libraries or reach anything beyond the plain JSON context it is given. A disallowed tag is
    # a syntax error, so such a template cannot be saved.
    engine = Engine(dirs=[], app_dirs=False, libraries={}, autoescape=True, debug=True)
    library = Library()
    library.tags = {name: defaulttags.register.tags[name] for name in ALLOWED_TAGS}
    library.filters = dict(defaultfilters.register.filters)
    engine.template_builtins = [library]
    return engine


@lru_cache(maxsize=512)
def _compile(source: str) -> Template:
    # Workers render the same template for every email of a batch: compile once per process.
    return _engine().from_string(source)


def _error_line(exc: Exception, source: str) -> str:
    info = getattr(exc, "template_debug", None)
    if info:
        return f" (line {info['line']}: {info['during'].strip()!r})"
    return ""


def compile_part(*, source: str, part: str) -> Template:
    """Compile one template part, raising TemplateRenderError that names the part and line."""
    try:
        return _compile(source)
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(f"{exc}{_error_line(exc, source)}", field=part) from exc


def render_part(*, source: str, context: dict, part: str) -> str:
    """Render one part; HTML is autoescaped, subject and text are not."""
    template = compile_part(source=source, part=part)
    try:
        return template.render(Context(context, autoescape=(part == "html")))
    except Exception as exc:
        # Rendering plain JSON data can only fail through a template bug (a bad filter
        # argument, say); report it as the template's fault, never as a server error.
        raise TemplateRenderError(
            f"{type(exc).__name__}: {exc}{_error_line(exc, source)}", field=part
        ) from exc


def render_subject(*, source: str, context: dict) -> str:
    """Render a subject: one line (whatever the template produced is folded), at most 998 chars."""
    rendered_subject = " ".join(render_part(source=source, context=context, part="subject").split())
    if len(rendered_subject) > MAX_SUBJECT_LENGTH:
        raise TemplateRenderError(
            f"The rendered subject is {len(rendered_subject)} characters; the limit is "
            f"{MAX_SUBJECT_LENGTH}.",
            field="subject",
        )
    return rendered_subject


def render_content(*, subject: str, html: str, text: str, context: dict) -> RenderedContent:
    """Render subject, HTML and text with one context."""
    return RenderedContent(
        subject=render_subject(source=subject, context=context),
        html=render_part(source=html, context=context, part="html") if html else "",
        text=render_part(source=text, context=context, part="text") if text else "",
    )
