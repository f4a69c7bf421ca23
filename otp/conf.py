"""Options of one-time codes: each one's setting name and default are written here only.

Read at call time through `mailqueue.conf.get_setting`, like Mailqueue's own options;
`config/settings.py` maps the MAILQUEUE_OTP_* variables onto these settings.
"""

from mailqueue.conf import get_setting


def resend_seconds() -> int:
    """How long after a code is issued a new one for the same address and purpose is refused."""
    return get_setting("MAILQUEUE_OTP_RESEND_SECONDS", 30, int, minimum=0)


def max_codes_per_hour() -> int:
    """Codes one client may send one address in any hour (all purposes together): with the
    wrong tries a code allows, this bounds the guesses an attacker gets by asking again."""
    return get_setting("MAILQUEUE_OTP_MAX_CODES_PER_HOUR", 5, int, minimum=1)


def max_attempts() -> int:
    """Wrong tries a code allows; the next try, even with the right code, is refused."""
    return get_setting("MAILQUEUE_OTP_MAX_ATTEMPTS", 5, int, minimum=1)


def default_template() -> str:
    """Slug of the template codes are sent with when a request names none."""
    return get_setting("MAILQUEUE_OTP_TEMPLATE", "email-verification", str)


def keep_hours() -> int:
    """Hours a code's row is kept after it was issued (the hourly limit needs the last hour)."""
    return get_setting("MAILQUEUE_OTP_KEEP_HOURS", 24, int, minimum=1)
