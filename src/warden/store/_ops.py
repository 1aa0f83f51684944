"""Small statements that differ by dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_if_absent(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert unless the primary key exists; True if this call inserted the row.

    Used for claims (idempotency keys): the database decides who was first.
    """
    stmt: Any
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    # RETURNING, not rowcount: psycopg reports no reliable rowcount for ON CONFLICT.
    first_key = next(iter(table.primary_key.columns))
    return conn.execute(stmt.returning(first_key)).first() is not None
