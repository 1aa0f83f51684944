"""Scrubbing secret values out of anything Warden logs, stores or returns.

A tool's output, an HTTP error from a receiver, an exception message: any of them can echo a
credential back. Everything that leaves Warden's hands after a secret was minted passes
through a ``Redactor`` that knows the values minted so far.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from warden.secrets._types import Secret

REDACTED = "[REDACTED]"

# Shorter values would match ordinary words and digits all over the data; a credential that
# short is not worth protecting by search-and-replace anyway.
MIN_LENGTH = 6


class Redactor:
    """Replaces every occurrence of a tracked value inside strings with ``[REDACTED]``.

    Thread-safe: values may be added while another thread redacts.
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Never list the values, only how many there are.
        return f"Redactor(tracked={len(self._values)})"

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: str | Secret) -> None:
        """Track ``value`` (or a ``Secret``'s value); values under 6 characters are ignored."""
        text = value.value if isinstance(value, Secret) else value
        if len(text) < MIN_LENGTH:
            return
        with self._lock:
            if text in self._values:
                return
            self._values.add(text)
            # Longest first, so that a value containing another is replaced whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def redact_text(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(REDACTED, text)

    def redact(self, obj: Any) -> Any:
        """A copy of a JSON-like ``obj`` with tracked values replaced inside every string.

        Dict keys are strings too and are redacted as well. Tuples stay tuples; numbers,
        booleans, ``None`` and other objects are returned as they are. When nothing is
        tracked, ``obj`` itself is returned without being walked (the common case).
        """
        pattern = self._pattern
        if pattern is None:
            return obj
        return _walk(obj, pattern)


def _walk(obj: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(obj, str):
        return pattern.sub(REDACTED, obj)
    if isinstance(obj, dict):
        return {_walk(k, pattern): _walk(v, pattern) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_walk(v, pattern) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_walk(v, pattern) for v in obj)
    return obj
