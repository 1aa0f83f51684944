"""The value a resolver hands out: a credential that must never be printed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, repr=False)
class Secret:
    """A credential for one tool call, valid until ``expires_at`` (timezone-aware UTC).

    ``repr`` and ``str`` mask the value, so a ``Secret`` that ends up in a log line, a
    traceback or an f-string does not leak it. Read ``.value`` only where it is sent.
    """

    ref: str
    value: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"Secret(ref={self.ref!r}, value=***, expires_at={self.expires_at.isoformat()})"

    __str__ = __repr__
