"""Options of stored templates: each one's setting name and default are written here only.

Read at call time through `mailqueue.conf.get_setting`, like Mailqueue's own options.
"""

from mailqueue.conf import get_setting


def render_seconds() -> float:
    """How long rendering one email's subject, HTML and text may take, together."""
    return get_setting("MAILQUEUE_TEMPLATE_RENDER_SECONDS", 2.0, float, minimum=0.01)


def max_output_chars() -> int:
    """How many characters rendering one email's parts may produce, together; also the
    largest string or list any one filter may return."""
    return get_setting("MAILQUEUE_TEMPLATE_MAX_OUTPUT_CHARS", 10_000_000, int, minimum=1000)
