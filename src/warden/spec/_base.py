"""Building blocks every spec model shares: the strict base model, durations, identifiers."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _parse_duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            try:
                return timedelta(seconds=float(match[1]) * _UNITS[match[2]])
            except OverflowError:  # more days than a timedelta holds: invalid, not a crash
                pass
    raise ValueError("a duration such as 500ms, 30s, 15m, 24h or 7d")


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$", max_length=120)]
FieldPath = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*$", max_length=200)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
