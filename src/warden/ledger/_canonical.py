"""Canonical JSON: one byte sequence per value, so that hashes are reproducible."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel

from warden.store._tables import utc_text


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    # An agent can send anything; a record of it must never fail to be written.
    return f"<{type(value).__name__}: {value!r}>"


def canonical_json(value: Any) -> str:
    """Sorted keys, no insignificant whitespace, UTF-8 kept, Decimal as string."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default
    )


def to_jsonable(value: Any) -> Any:
    """The plain-JSON form of ``value`` (what a reader of the ledger will get back)."""
    return json.loads(canonical_json(value))
