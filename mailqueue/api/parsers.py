"""A JSON parser that refuses what PostgreSQL or a mail header could never hold."""

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32


def _find_unstorable(value: object, path: str, depth: int = 0) -> tuple[str, str] | None:
    """The first (path, reason) of a string PostgreSQL jsonb/text cannot store, or None."""
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


class StrictJSONParser(JSONParser):
    """JSON bodies: too-deep nesting, NUL characters and lone surrogates are a 400 naming where."""

    def parse(self, stream, media_type=None, parser_context=None):
        """Parse, then check every string and the nesting depth."""
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        found = _find_unstorable(data, "")
        if found:
            path, reason = found
            raise ValidationError(
                {path.split(".")[0].split("[")[0] or "body": [f"{path}: {reason}"]}
            )
        return data
