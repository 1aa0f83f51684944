"""Idempotency keys in the store: one key, one side effect.

States: ``started`` (claimed, intent durable, outcome not yet recorded), ``done`` (the
first result is kept and returned to every repeat), ``unknown`` (timeout or bad output:
the effect may have happened, so repeats are refused). A key whose tool refused before
acting is deleted, so a corrected retry can run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from warden.ledger import canonical_json
from warden.store import _fast as fast
from warden.store._tables import utc_text

_LOOKUP = "SELECT state, result, action_id FROM idempotency WHERE tenant = ? AND key = ?"
_CLAIM = (
    "INSERT INTO idempotency (tenant, key, run_id, action_id, tool, state, result, created_at)"
    " VALUES (?, ?, ?, ?, ?, 'started', NULL, ?) ON CONFLICT DO NOTHING RETURNING key"
)
_SETTLE = "UPDATE idempotency SET state = ?, result = ? WHERE tenant = ? AND key = ?"
_RELEASE = "DELETE FROM idempotency WHERE tenant = ? AND key = ?"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    state: str
    result: str | None
    action_id: str


def derive_key(run_id: str, tool: str, args: Any) -> str:
    """The key of a write the caller gave no key for: same run, tool and args → same key."""
    return hashlib.sha256(f"{run_id}\x00{tool}\x00{canonical_json(args)}".encode()).hexdigest()


def lookup(conn: Connection, tenant: str, key: str) -> KeyRecord | None:
    row = fast.fetch_one(conn, _LOOKUP, (tenant, key))
    return None if row is None else KeyRecord(row[0], row[1], row[2])


def peek(engine: Engine, tenant: str, key: str) -> KeyRecord | None:
    """``lookup`` outside a transaction, for the cheap pre-check before deciding."""
    row = fast.query_one(engine, _LOOKUP, (tenant, key))
    return None if row is None else KeyRecord(row[0], row[1], row[2])


def claim(
    conn: Connection, *, tenant: str, key: str, run_id: str, action_id: str, tool: str, now: datetime
) -> bool:
    """True if this call claimed the key; the database decides who was first."""
    return fast.fetch_one(conn, _CLAIM, (tenant, key, run_id, action_id, tool, utc_text(now))) is not None


def settle_done(conn: Connection, tenant: str, key: str, result: Any) -> None:
    fast.execute(conn, _SETTLE, ("done", canonical_json(result), tenant, key)).close()


def settle_unknown(conn: Connection, tenant: str, key: str) -> None:
    fast.execute(conn, _SETTLE, ("unknown", None, tenant, key)).close()


def release(conn: Connection, tenant: str, key: str) -> None:
    fast.execute(conn, _RELEASE, (tenant, key)).close()
