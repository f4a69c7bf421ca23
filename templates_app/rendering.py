"""Rendering of stored templates with the Django template language, in a locked-down engine.

A stored template is written by an API client, so it is treated as hostile:

- It reaches nothing but its context, and the context is plain data: before each render the
  context is copied into dicts, lists, strings, numbers, booleans and None (any other object
  becomes its text), so no lookup can walk from a value to a model, a manager, the settings or
  a callable with side effects beyond the copy. There are no context processors (`request`,
  `settings`, `user` are simply undefined) and Django refuses any name or attribute that begins
  with `_` when the template is compiled.
- It reads no file and loads no code: the engine has no loaders and no libraries, and only the
  tags in ALLOWED_TAGS exist (`include`, `extends`, `load`, `ssi`, `debug`, `url` ... are a
  syntax error, so such a template cannot even be saved).
- It cannot run away: one email's parts share a RenderBudget of wall-clock time
  (MAILQUEUE_TEMPLATE_RENDER_SECONDS) and of characters produced
  (MAILQUEUE_TEMPLATE_MAX_OUTPUT_CHARS), checked at every node, every loop iteration and every
  filter; filters whose output does not follow from their input's size (`center`, `ljust`,
  `rjust`, `stringformat`, `floatformat`, `join`) and `{% lorem %}` are checked before they
  allocate. Exceeding a limit is a TemplateRenderError naming the part, like any template bug.
"""

import functools
import re
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
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
from django.template.base import Node, Template, TextNode
from django.template.defaulttags import LoremNode

from mailqueue.errors import TemplateRenderError
from templates_app import conf

# RFC 5322's line limit, and the width of the stored subject column.
MAX_SUBJECT_LENGTH = 998
# Control characters (tab too: it is folded like any space) and the Unicode line separators.
_SUBJECT_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The largest width or precision `center`, `ljust`, `rjust`, `stringformat` and `floatformat`
# accept: far beyond any layout, small enough that one filter call stays cheap.
MAX_FORMAT_WIDTH = 10_000
# The largest count `{% lorem %}` accepts (it makes placeholder text, a few hundred words).
MAX_LOREM_COUNT = 1000


@dataclass(frozen=True)
class RenderedContent:
    """The three rendered parts of an email."""

    subject: str
    html: str
    text: str


class RenderLimitExceeded(Exception):
    """A render went over its time or output budget, or a filter argument over its cap."""


class RenderBudget:
    """The time and characters one email's render may still use, shared by its parts."""

    def __init__(self, *, seconds: float, max_chars: int) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.max_chars = max_chars
        self.remaining = max_chars
        # Characters returned by the guarded children of each node being rendered, innermost
        # last: a node's own new output is its result minus its children's, so text that a
        # loop joins is not counted once per level of nesting.
        self.children = [0]

    @classmethod
    def from_settings(cls) -> "RenderBudget":
        """A fresh budget with the configured limits."""
        return cls(seconds=conf.render_seconds(), max_chars=conf.max_output_chars())

    def tick(self) -> None:
        """Fail once the time is up."""
        if time.monotonic() > self.deadline:
            raise self.too_slow()

    def check_size(self, size: int, what: str) -> None:
        """Fail before making something of `size` characters that could not fit."""
        if size > self.remaining:
            raise RenderLimitExceeded(f"{what} would make {size} characters; {self._limit_text()}")

    def too_slow(self) -> RenderLimitExceeded:
        """The error for a render past its time."""
        return RenderLimitExceeded(
            f"Rendering took longer than {self.seconds:g} s "
            "(MAILQUEUE_TEMPLATE_RENDER_SECONDS); a loop over too much data?"
        )

    def too_much_output(self) -> RenderLimitExceeded:
        """The error for output over the limit."""
        return RenderLimitExceeded(f"The rendered output is too large: {self._limit_text()}")

    def _limit_text(self) -> str:
        return (
            f"an email's parts may produce at most {self.max_chars} characters "
            "(MAILQUEUE_TEMPLATE_MAX_OUTPUT_CHARS)."
        )


# The budget of the render running in this thread (filters are not given the context).
_current_budget: ContextVar[RenderBudget] = ContextVar("template_render_budget")


class SandboxContext(Context):
    """A Context that spends its render's budget on every variable a loop or `with` sets, so
    even a loop with an empty body is stopped by the clock."""

    def __init__(self, dict_: dict, *, autoescape: bool, budget: RenderBudget) -> None:
        super().__init__(dict_, autoescape=autoescape)
        self.budget = budget

    def __setitem__(self, key: str, value: object) -> None:
        """Set a variable (a loop's item, say) after checking the clock."""
        self.budget.tick()
        super().__setitem__(key, value)

    def update(self, other_dict: Mapping) -> object:
        """Push variables (an unpacking loop's items) after checking the clock."""
        self.budget.tick()
        return super().update(other_dict)


def plain_data(value: object) -> object:
    """A copy of `value` made only of dicts, lists, strings, numbers, booleans and None.

    What a template may see: any other object (a model, a date, a lazy string) becomes its
    text, so no lookup can reach its attributes, and the copy keeps a template from changing
    the caller's data (`{{ items.clear }}` empties only the copy).
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(item) for item in value]
    return str(value)


# --- Filters and tags with caps ---------------------------------------------------------------


def _budget() -> RenderBudget:
    return _current_budget.get()


def _width(arg: object) -> int | None:
    try:
        return int(arg)
    except (TypeError, ValueError):
        return None  # the filter itself decides what a non-number means


def _checked_width(name: str, arg: object) -> None:
    width = _width(arg)
    if width is not None and abs(width) > MAX_FORMAT_WIDTH:
        raise RenderLimitExceeded(
            f"'{name}' was given {width}; widths and precisions are at most {MAX_FORMAT_WIDTH}."
        )


def _guard_padding(name: str, func: Callable) -> Callable:
    """center, ljust, rjust: the width is checked before the padded string is made."""

    def padded(value, arg):
        _checked_width(name, arg)
        return func(value, arg)

    return padded


def _guard_floatformat(func: Callable) -> Callable:
    def floatformat(text, arg=-1):
        # "3", "-3", "3g", "3u", "-3gu": the number before Django's suffixes is the precision.
        _checked_width("floatformat", str(arg).rstrip("gu") or "0")
        return func(text, arg)

    return floatformat


_FORMAT_NUMBERS = re.compile(r"\d+")


def _guard_stringformat(func: Callable) -> Callable:
    def stringformat(value, arg):
        # `%0999999999d` or `%.999999999f` would make a string of that many characters.
        for number in _FORMAT_NUMBERS.findall(str(arg)):
            _checked_width("stringformat", number)
        return func(value, arg)

    return stringformat


def _guard_join(func: Callable) -> Callable:
    def join(value, arg, autoescape=True):
        # The separator is repeated once per item: a long one over a long list is huge.
        if hasattr(value, "__len__"):
            _budget().check_size(len(str(arg)) * max(len(value) - 1, 0), "'join'")
        return func(value, arg, autoescape=autoescape)

    return join


_PRECHECKED: dict[str, Callable[[Callable], Callable]] = {
    "center": functools.partial(_guard_padding, "center"),
    "ljust": functools.partial(_guard_padding, "ljust"),
    "rjust": functools.partial(_guard_padding, "rjust"),
    "floatformat": _guard_floatformat,
    "stringformat": _guard_stringformat,
    "join": _guard_join,
}


def _bounded_filter(name: str, func: Callable) -> Callable:
    """`func` that also refuses to return a string or list longer than the output limit."""
    guarded = _PRECHECKED[name](func) if name in _PRECHECKED else func

    @functools.wraps(func)  # keeps is_safe, needs_autoescape ... and the signature Django checks
    def bounded(*args, **kwargs):
        budget = _budget()
        budget.tick()
        result = guarded(*args, **kwargs)
        if isinstance(result, (str, list, tuple)) and len(result) > budget.max_chars:
            raise budget.too_much_output()
        return result

    return bounded


class BoundedLoremNode(LoremNode):
    """`{% lorem %}` with a count of at most MAX_LOREM_COUNT."""

    def render(self, context: Context) -> str:
        """Refuse a huge count before generating anything."""
        count = _width(self.count.resolve(context))
        if count is not None and count > MAX_LOREM_COUNT:
            raise RenderLimitExceeded(f"'lorem' was given {count}; at most {MAX_LOREM_COUNT}.")
        return super().render(context)


def _lorem(parser, token) -> BoundedLoremNode:
    node = defaulttags.lorem(parser, token)
    return BoundedLoremNode(node.count, node.method, node.common)


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
    library.tags["lorem"] = _lorem
    library.filters = {
        name: _bounded_filter(name, func) for name, func in defaultfilters.register.filters.items()
    }
    engine.template_builtins = [library]
    return engine


def _guard_text(node: TextNode) -> None:
    """Make a text node charge its text to the running render's budget."""
    text = node.s
    size = len(text)

    # Text returns from render_annotated without calling render. The clock is not checked
    # here: a loop checks it at every iteration (SandboxContext), and any other node too.
    def guarded(context):
        budget = context.budget
        budget.children[-1] += size
        budget.remaining -= size
        if budget.remaining < 0:
            raise budget.too_much_output()
        return text

    node.render_annotated = guarded


def _guard_node(node: Node) -> None:
    """Make `node` spend the running render's budget: the clock, and its own new output."""
    original = node.render

    # Wrapped at render (called by render_annotated), so that a limit it hits is reported at
    # its line. One function on purpose: it runs for every node of every email rendered.
    def guarded(context):
        budget = context.budget
        if time.monotonic() > budget.deadline:
            raise budget.too_slow()
        children = budget.children
        children.append(0)
        try:
            result = original(context)
        except BaseException:
            children.pop()
            raise
        size = len(result)
        new = size - children.pop()
        children[-1] += size
        if new > 0:
            budget.remaining -= new
            if budget.remaining < 0:
                raise budget.too_much_output()
        return result

    node.render = guarded


@lru_cache(maxsize=512)
def _compile(source: str) -> Template:
    # Workers render the same template for every email of a batch: compile once per process.
    template = _engine().from_string(source)
    for node in template.nodelist.get_nodes_by_type(Node):
        if isinstance(node, TextNode):
            _guard_text(node)
        else:
            _guard_node(node)
    return template


def _error_line(exc: Exception, source: str) -> str:
    info = getattr(exc, "template_debug", None)
    if info:
        return f" (line {info['line']}: {info['during'].strip()[:200]!r})"
    return ""


def compile_part(*, source: str, part: str) -> Template:
    """Compile one template part, raising TemplateRenderError that names the part and line."""
    try:
        return _compile(source)
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(f"{exc}{_error_line(exc, source)}", field=part) from exc


def _render(*, source: str, context: dict, part: str, budget: RenderBudget) -> str:
    """Render one part; `context` must already be plain data (see plain_data)."""
    template = compile_part(source=source, part=part)
    token = _current_budget.set(budget)
    try:
        return template.render(SandboxContext(context, autoescape=(part == "html"), budget=budget))
    except RenderLimitExceeded as exc:
        raise TemplateRenderError(f"{exc}{_error_line(exc, source)}", field=part) from None
    except Exception as exc:
        # Rendering plain JSON data can only fail through a template bug (a bad filter
        # argument, say); report it as the template's fault, never as a server error.
        raise TemplateRenderError(
            f"{type(exc).__name__}: {exc}{_error_line(exc, source)}", field=part
        ) from exc
    finally:
        _current_budget.reset(token)


def _one_line(*, rendered: str) -> str:
    """A rendered subject as one header line of at most 998 characters."""
    # Whatever a context value brings (a newline, a vertical tab, U+2028, NUL) becomes a space:
    # a subject is one header line, and no character may end it early.
    subject = " ".join(_SUBJECT_BREAKS.sub(" ", rendered).split())
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise TemplateRenderError(
            f"The rendered subject is {len(subject)} characters; the limit is "
            f"{MAX_SUBJECT_LENGTH}.",
            field="subject",
        )
    return subject


def render_part(*, source: str, context: dict, part: str) -> str:
    """Render one part within a fresh budget; HTML is autoescaped, subject and text are not."""
    plain = plain_data(context)
    return _render(source=source, context=plain, part=part, budget=RenderBudget.from_settings())


def render_subject(*, source: str, context: dict) -> str:
    """Render a subject: one line (whatever the template produced is folded, control characters
    become spaces), at most 998 chars."""
    return _one_line(rendered=render_part(source=source, context=context, part="subject"))


def render_content(*, subject: str, html: str, text: str, context: dict) -> RenderedContent:
    """Render subject, HTML and text with one context, within one budget."""
    # Copied once, before the clock starts: the copy's cost follows the request's size, which
    # MAILQUEUE_MAX_BODY_BYTES already bounds.
    # Compiled too: compiling follows the source's size, and a worker compiles a template once.
    plain = plain_data(context)
    sources = {"subject": subject, "html": html, "text": text}
    for part, source in sources.items():
        compile_part(source=source, part=part)
    budget = RenderBudget.from_settings()
    rendered = {
        part: _render(source=source, context=plain, part=part, budget=budget) if source else ""
        for part, source in sources.items()
    }
    return RenderedContent(
        subject=_one_line(rendered=rendered["subject"]),
        html=rendered["html"],
        text=rendered["text"],
    )
