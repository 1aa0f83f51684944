"""The environment of the τ²-retail suite: ``RetailState`` over the data set (the
bundled subset, or ``$TAU2_RETAIL_DATA``), a case's fixtures given as patches to it.

A case's ``fixtures`` are ``table -> id -> fields``, merged into the record (mappings
recursively, other values replaced) on every reset: a violation that needs "this gift
card is empty" says so as ``{users: {u1: {payment_methods: {gc: {balance: 0.0}}}}}``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# ``warden eval run`` loads this file by path, and the ``warden`` script does not put the
# current directory on sys.path: the examples are not an installed package.
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from examples.tau2_retail.data import load  # noqa: E402
from examples.tau2_retail.store import TABLES, RetailState  # noqa: E402

__all__ = ["SuiteState", "make_environment", "patch"]


def patch(record: dict[str, Any], fields: Mapping[str, Any]) -> None:
    """Merge ``fields`` into ``record``: mappings recursively, other values replaced."""
    for key, value in fields.items():
        old = record.get(key)
        if isinstance(old, dict) and isinstance(value, Mapping):
            patch(old, value)
        else:
            record[key] = value


class SuiteState(RetailState):
    """``RetailState`` whose ``reset(fixtures)`` starts from the data set and applies the
    case's patches (an empty mapping: the data set as it is)."""

    def reset(self, fixtures: Mapping[str, Any] | None = None) -> None:
        super().reset()
        for table, records in (fixtures or {}).items():
            if table not in TABLES or not isinstance(records, Mapping):
                raise ValueError(f"fixtures.{table}: one of {', '.join(TABLES)}, id -> fields")
            for key, fields in records.items():
                if not isinstance(fields, Mapping):
                    raise ValueError(f"fixtures.{table}.{key}: a mapping of fields")
                try:
                    patch(self.writable(table, str(key)), fields)
                except KeyError:
                    raise ValueError(f"fixtures.{table}: no record {key!r}") from None


def make_environment() -> SuiteState:
    return SuiteState(load().db)
