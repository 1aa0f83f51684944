"""Decoding of CEL literal tokens: numbers, and strings/bytes with their escape sequences."""

from __future__ import annotations

import re

from warden.policy.cel._values import UINT_MAX, UInt

_ESCAPE = re.compile(
    r"""\\(?:
        (?P<simple>[abfnrtv\\?"'`])
      | [xX](?P<hex>[0-9a-fA-F]{2})
      | u(?P<u4>[0-9a-fA-F]{4})
      | U(?P<u8>[0-9a-fA-F]{8})
      | (?P<oct>[0-3][0-7]{2})
    )""",
    re.VERBOSE,
)
_SIMPLE = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "?": "?",
    '"': '"',
    "'": "'",
    "`": "`",
}


class LiteralError(ValueError):
    """A literal token that lexes but does not denote a value; ``offset`` is within the token."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


def parse_int(text: str) -> int:
    """An unsigned int literal's magnitude; the caller range-checks after applying any sign."""
    return int(text, 16) if text[:2] == "0x" else int(text, 10)


def parse_uint(text: str) -> UInt:
    value = parse_int(text[:-1])
    if value > UINT_MAX:
        raise LiteralError("uint literal out of range")
    return UInt(value)


def parse_string(token: str) -> str | bytes:
    """Decode a string or bytes literal token, prefix and quotes included."""
    prefix_length = 0
    while token[prefix_length] not in "'\"":
        prefix_length += 1
    prefix = token[:prefix_length].lower()
    quote_length = 3 if token[prefix_length : prefix_length + 3] in ("'''", '"""') else 1
    start = prefix_length + quote_length
    body = token[start : len(token) - quote_length]
    is_bytes = "b" in prefix
    if "r" in prefix:
        return body.encode("utf-8") if is_bytes else body
    return _unescape(body, is_bytes, start)


def _unescape(body: str, is_bytes: bool, start: int) -> str | bytes:
    out = bytearray()
    position = 0
    while True:
        backslash = body.find("\\", position)
        if backslash < 0:
            out += body[position:].encode("utf-8", "surrogatepass")
            break
        out += body[position:backslash].encode("utf-8", "surrogatepass")
        match = _ESCAPE.match(body, backslash)
        if match is None:
            raise LiteralError("invalid escape sequence", start + backslash)
        if match["simple"] is not None:
            out += _SIMPLE[match["simple"]].encode("ascii")
        elif match["hex"] is not None or match["oct"] is not None:
            code = int(match["hex"], 16) if match["hex"] is not None else int(match["oct"], 8)
            # In bytes literals these escapes are octets; in strings, code points.
            out += bytes([code]) if is_bytes else chr(code).encode("utf-8")
        else:
            if is_bytes:
                message = "\\u and \\U escapes are not allowed in bytes"
                raise LiteralError(message, start + backslash)
            code = int(match["u4"] or match["u8"], 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise LiteralError("escape is not a valid code point", start + backslash)
            out += chr(code).encode("utf-8")
        position = match.end()
    if is_bytes:
        return bytes(out)
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LiteralError("string is not valid Unicode", start) from error
