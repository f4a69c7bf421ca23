"""Options of topics: each one's setting name and default are written here only.

Read at call time through `mailqueue.conf.get_setting`, like Mailqueue's own options.
"""

from mailqueue.conf import get_setting

SEVEN_DAYS = 7 * 24 * 3600


def confirm_max_age_seconds() -> int:
    """How long a double opt-in confirmation link works after it was sent."""
    return get_setting("MAILQUEUE_TOPICS_CONFIRM_MAX_AGE", SEVEN_DAYS, int, minimum=60)


def confirm_resend_seconds() -> int:
    """How long after a confirmation email a repeated subscribe of a pending address waits
    before sending another (a form submitted in a loop must not flood the inbox)."""
    return get_setting("MAILQUEUE_TOPICS_CONFIRM_RESEND_SECONDS", 60, int, minimum=0)
