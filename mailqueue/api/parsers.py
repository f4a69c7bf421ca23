"""A JSON parser that refuses what PostgreSQL or a mail header could never hold, and anything
whose meaning a reader could doubt.

Refused with a 400 that says why: a body that is not UTF-8 (whatever charset the Content-Type
names: JSON is UTF-8, and a "charset" such as zlib would inflate a small body past
MAILQUEUE_MAX_BODY_BYTES), NaN and Infinity, a number too large to be a finite double or an
integer of more digits than Python converts, an object with the same key twice (parsers
disagree on which one wins), nesting deeper than MAX_DEPTH, NUL characters and unpaired UTF-16
surrogates. A body over MAILQUEUE_MAX_BODY_BYTES never gets here (RequestBodyLimitMiddleware
answers 413).
"""

import codecs
import json
import math
import sys

from django.conf import settings
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32


def _find_unstorable(value: object, path: str, depth: int = 0) -> tuple[str, str] | None:
    """The first (path, reason) of a value PostgreSQL jsonb/text cannot store, or None."""
    if depth > MAX_DEPTH:
        return path or "body", f"Nested deeper than {MAX_DEPTH} levels."
    if isinstance(value, str):
        if "\x00" in value:
            return path or "body", "Contains a NUL character (\\u0000)."
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body", "Contains an unpaired UTF-16 surrogate; not valid Unicode."
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return path or "body", "Number out of range: larger than a double can hold."
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_unstorable(key, path or "body", depth + 1) or _find_unstorable(
                item, f"{path}.{key}" if path else str(key), depth + 1
            )
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_unstorable(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
    return None


class _DuplicateKey(ValueError):
    """An object names the same key twice."""


def _unique_object(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object as a dict, refusing a repeated key (json would silently keep the last)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"The key {key!r} appears twice in one object.")
            seen.add(key)
    return result


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number; numbers must be finite.")


def _parse_int(text: str) -> int:
    limit = sys.get_int_max_str_digits()
    digits = len(text.lstrip("-"))
    if limit and digits > limit:
        raise ValueError(f"An integer of {digits} digits is too large (at most {limit}).")
    return int(text)


def _is_utf8(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


class StrictJSONParser(JSONParser):
    """JSON bodies: UTF-8 only; NaN, non-finite numbers, duplicate keys, too-deep nesting, NUL
    characters and lone surrogates are a 400 naming where."""

    def parse(self, stream, media_type=None, parser_context=None):
        """Parse, then check every string, number and the nesting depth."""
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        if not _is_utf8(encoding):
            raise ParseError(f"JSON parse error - the body must be UTF-8, not {encoding!r}.")
        try:
            text = stream.read().decode("utf-8") if stream is not None else ""
        except UnicodeDecodeError as exc:
            raise ParseError(
                f"JSON parse error - the body is not valid UTF-8 ({exc.reason} at byte "
                f"{exc.start})."
            ) from None
        try:
            data = json.loads(
                text,
                parse_constant=_refuse_constant,
                parse_int=_parse_int,
                object_pairs_hook=_unique_object,
            )
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        found = _find_unstorable(data, "")
        if found:
            path, reason = found
            raise ValidationError(
                {path.split(".")[0].split("[")[0] or "body": [f"{path}: {reason}"]}
            )
        return data
