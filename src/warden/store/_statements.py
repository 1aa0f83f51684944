"""Statements of the hot path, built from the Core tables and compiled once per dialect.

The governed call runs a handful of single statements per call (an idempotency claim, a
step claim, a lock row). Building and compiling a SQLAlchemy Core statement for each
execution cost ~60 µs here (see ``store._fast``), so each is a ``Statement``: built from
the tables in ``store._tables`` (the schema stays the one source of names), compiled the
first time a dialect needs it, and executed on the DB-API cursor with the dialect's own
parameter style. Values are passed as the DB-API takes them (times as ``utc_text``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, Insert, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str
    #: parameter names in order, for positional paramstyles; None for named ones
    order: tuple[str, ...] | None
    #: values of literals the statement carries as parameters
    defaults: Mapping[str, Any]

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        merged = {**self.defaults, **values} if self.defaults else values
        if self.order is None:
            return merged
        return tuple(merged[name] for name in self.order)


class Statement:
    """A statement built per dialect name by ``build`` (dialects differ in e.g. their
    ``INSERT ... ON CONFLICT`` construct), compiled once per dialect."""

    def __init__(self, build: Callable[[str], Executable]) -> None:
        self._build = build
        self._compiled: dict[str, Compiled] = {}
        self._lock = threading.Lock()

    def compiled(self, dialect: Dialect) -> Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            with self._lock:
                stmt = self._build(dialect.name)
                c = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
                found = Compiled(
                    str(c),
                    tuple(c.positiontup) if c.positiontup is not None else None,
                    {k: v for k, v in c.params.items() if not c.binds[k].required},
                )
                self._compiled[dialect.name] = found
        return found


def insert_ignoring(dialect: str, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the dialect's construct (both dialects
    support ``RETURNING`` on it: a returned row means this insert won)."""
    if dialect == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


__all__ = ["Compiled", "Statement", "insert_ignoring"]
