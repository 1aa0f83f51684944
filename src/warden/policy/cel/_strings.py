"""The cel-go strings extension (``ext.Strings``): ``charAt``, ``indexOf``, ``split``, ...

Semantics follow cel-go's ``ext/strings.go``: positions count code points (Go runes), an
index outside the string is an error, and a negative position is always an error. Each
function checks its own argument types and raises "no such overload" otherwise, since
Warden's checker does not infer types.
"""

from __future__ import annotations

from typing import Any

from warden.policy.cel._values import fail, no_overload, type_name

# Go's unicode.IsSpace, which strings.TrimSpace uses. Python's str.strip() would also strip
# the ASCII separators \x1c-\x1f, which Go keeps.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_QUOTE_ESCAPES = str.maketrans(
    {
        "\a": "\\a",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        "\v": "\\v",
        "\\": "\\\\",
        '"': '\\"',
    }
)


def _string(value: Any) -> bool:
    return type(value) is str or type_name(value) == "string"


def _int(value: Any) -> bool:
    return type(value) is int or type_name(value) == "int"


def _position(value: int, what: str, length: int) -> int:
    if value < 0 or value > length:
        fail(f"{what}: index out of range: {value} (string length {length})")
    return value


def char_at(text: Any, position: Any) -> str:
    """``'hello'.charAt(1)`` is ``'e'``; the position just past the end gives ``''``."""
    if not (_string(text) and _int(position)):
        raise no_overload("charAt", text, position)
    index = _position(int(position), "charAt", len(text))
    return str(text)[index : index + 1]


def index_of(text: Any, part: Any, offset: Any = 0) -> int:
    """First position of ``part`` at or after ``offset``, or -1."""
    if not (_string(text) and _string(part) and _int(offset)):
        raise no_overload("indexOf", text, part, offset)
    s, sub, start = str(text), str(part), int(offset)
    if start < 0:
        fail(f"indexOf: index out of range: {start}")
    if not sub:
        return min(start, len(s))
    if start >= len(s):
        return -1
    return s.find(sub, start)


def last_index_of(text: Any, part: Any, *offset: Any) -> int:
    """Last position of ``part`` starting at or before ``offset`` (default: the end), or -1.

    As in cel-go, an offset at or past the end of a non-empty search finds nothing.
    """
    if not (_string(text) and _string(part) and all(_int(o) for o in offset)):
        raise no_overload("lastIndexOf", text, part, *offset)
    s, sub = str(text), str(part)
    if not offset:
        return len(s) if not sub else s.rfind(sub)
    start = int(offset[0])
    if start < 0:
        fail(f"lastIndexOf: index out of range: {start}")
    if not sub:
        return min(start, len(s))
    if start >= len(s):
        return -1
    return s.rfind(sub, 0, start + len(sub))


def replace(text: Any, old: Any, new: Any, limit: Any = -1) -> str:
    """Replace the first ``limit`` occurrences (all when ``limit`` is negative)."""
    if not (_string(text) and _string(old) and _string(new) and _int(limit)):
        raise no_overload("replace", text, old, new, limit)
    count = int(limit)
    return str(text).replace(str(old), str(new), count if count >= 0 else -1)


def split(text: Any, separator: Any, limit: Any = -1) -> list[str]:
    """Go's ``strings.SplitN``: at most ``limit`` parts (all when negative, none when 0)."""
    if not (_string(text) and _string(separator) and _int(limit)):
        raise no_overload("split", text, separator, limit)
    s, sep, n = str(text), str(separator), int(limit)
    if n == 0:
        return []
    if sep:
        return s.split(sep, n - 1 if n > 0 else -1)
    # An empty separator splits into code points, the last part keeping the remainder.
    if n < 0 or n >= len(s):
        return list(s)
    return [*s[: n - 1], s[n - 1 :]]


def substring(text: Any, start: Any, *end: Any) -> str:
    """Code points ``start`` (inclusive) to ``end`` (exclusive, default: the end)."""
    if not (_string(text) and _int(start) and all(_int(e) for e in end)):
        raise no_overload("substring", text, start, *end)
    s = str(text)
    begin = int(start)
    stop = int(end[0]) if end else len(s)
    # cel-go's order of checks, so the same call fails with the same message.
    if end and begin > stop:
        fail(f"substring: invalid range: start {begin} is after end {stop}")
    _position(begin, "substring", len(s))
    _position(stop, "substring", len(s))
    return s[begin:stop]


def trim(text: Any) -> str:
    """Strip leading and trailing Unicode white space (Go's ``strings.TrimSpace``)."""
    if not _string(text):
        raise no_overload("trim", text)
    return str(text).strip(_GO_SPACE)


def join(items: Any, separator: Any = "") -> str:
    """``['a', 'b'].join('-')`` is ``'a-b'``; every element must be a string."""
    if type_name(items) != "list" or not _string(separator):
        raise no_overload("join", items, separator)
    for position, item in enumerate(items):
        if not _string(item):
            fail(f"join: element {position} is {type_name(item)}, not string")
    return str(separator).join(str(item) for item in items)


def quote(text: Any) -> str:
    """``strings.quote``: a double-quoted string literal with CEL escapes."""
    if not _string(text):
        raise no_overload("strings.quote", text)
    # Like cel-go, which replaces invalid runes with U+FFFD: here, lone surrogates.
    sane = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in str(text))
    return '"' + sane.translate(_QUOTE_ESCAPES) + '"'
