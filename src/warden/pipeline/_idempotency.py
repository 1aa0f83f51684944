"""Idempotency keys in the store: one key, one side effect.

States: ``started`` (claimed, intent durable, outcome not yet recorded), ``done`` (the
first result is kept and returned to every repeat), ``unknown`` (the tool failed in a way
that may have come after its effect: repeats are refused until an operator reconciles the
key). Only a key whose tool declared that nothing happened (``ToolError(effect=False)``,
or a call that never started) is deleted, so a corrected retry can run.

A key is bound to the call it was first used for (workflow, tool, canonical args): the
same key on another call is a conflict, never a replay of the first call's result.
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

_LOOKUP = (
    "SELECT state, result, action_id, fingerprint FROM idempotency WHERE tenant = ? AND key = ?"
)
_CLAIM = (
    "INSERT INTO idempotency"
    " (tenant, key, run_id, action_id, tool, state, result, created_at, fingerprint)"
    " VALUES (?, ?, ?, ?, ?, 'started', NULL, ?, ?) ON CONFLICT DO NOTHING RETURNING key"
)
_SETTLE = "UPDATE idempotency SET state = ?, result = ? WHERE tenant = ? AND key = ?"
_RELEASE = "DELETE FROM idempotency WHERE tenant = ? AND key = ?"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    state: str
    result: str | None
    action_id: str
    #: of the call that first used the key (None for keys recorded before fingerprints)
    fingerprint: str | None = None

    def binds(self, fingerprint: str) -> bool:
        """Whether a call with ``fingerprint`` is the call this key was first used for."""
        return self.fingerprint is None or self.fingerprint == fingerprint


def derive_key(run_id: str, tool: str, args: Any) -> str:
    """The key of a write the caller gave no key for: same run, tool and args → same key."""
    return hashlib.sha256(f"{run_id}\x00{tool}\x00{canonical_json(args)}".encode()).hexdigest()


def fingerprint(workflow: str, tool: str, args: Any) -> str:
    """What a key is bound to: the workflow, the tool and the canonical arguments."""
    return hashlib.sha256(f"{workflow}\x00{tool}\x00{canonical_json(args)}".encode()).hexdigest()


def lookup(conn: Connection, tenant: str, key: str) -> KeyRecord | None:
    row = fast.fetch_one(conn, _LOOKUP, (tenant, key))
    return None if row is None else KeyRecord(row[0], row[1], row[2], row[3])


def peek(engine: Engine, tenant: str, key: str) -> KeyRecord | None:
    """``lookup`` outside a transaction, for the cheap pre-check before deciding."""
    row = fast.query_one(engine, _LOOKUP, (tenant, key))
    return None if row is None else KeyRecord(row[0], row[1], row[2], row[3])


def claim(
    conn: Connection,
    *,
    tenant: str,
    key: str,
    run_id: str,
    action_id: str,
    tool: str,
    now: datetime,
    fingerprint: str,
) -> bool:
    """True if this call claimed the key; the database decides who was first."""
    params = (tenant, key, run_id, action_id, tool, utc_text(now), fingerprint)
    return fast.fetch_one(conn, _CLAIM, params) is not None


def settle_done(conn: Connection, tenant: str, key: str, result: Any) -> None:
    fast.execute(conn, _SETTLE, ("done", canonical_json(result), tenant, key)).close()


def settle_unknown(conn: Connection, tenant: str, key: str) -> None:
    fast.execute(conn, _SETTLE, ("unknown", None, tenant, key)).close()


def release(conn: Connection, tenant: str, key: str) -> None:
    fast.execute(conn, _RELEASE, (tenant, key)).close()
