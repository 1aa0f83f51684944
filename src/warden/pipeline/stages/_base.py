"""What every stage shares: its signature, and arguments as plain data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, Protocol

from warden.ledger import to_jsonable
from warden.pipeline._call import Call
from warden.results import Result

Next = Callable[[Call], Awaitable[Result]]


class Stage(Protocol):
    async def __call__(self, call: Call, next: Next) -> Result: ...


_PLAIN = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """Validated arguments as plain data for rules (nested models become dicts)."""
    if isinstance(value, dict):
        if all(type(v) in _PLAIN for v in value.values()):
            return value
        return {k: plain(v) for k, v in value.items()}
    if type(value) in _PLAIN or isinstance(value, Decimal):
        return value
    return to_jsonable(value)
