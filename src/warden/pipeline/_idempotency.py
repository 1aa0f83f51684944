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
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, select, update

from warden.ledger import canonical_json
from warden.store import _fast as fast
from warden.store._statements import Statement, insert_ignoring
from warden.store._tables import idempotency, utc_text

_KEY = (idempotency.c.tenant == bindparam("tenant")) & (idempotency.c.key == bindparam("key"))
_LOOKUP = Statement(
    lambda _: select(
        idempotency.c.state,
        idempotency.c.result,
        idempotency.c.action_id,
        idempotency.c.fingerprint,
    ).where(_KEY)
)
_CLAIM = Statement(
    lambda dialect: (
        insert_ignoring(dialect, idempotency)
        .values(
            tenant=bindparam("tenant"),
            key=bindparam("key"),
            run_id=bindparam("run_id"),
            action_id=bindparam("action_id"),
            tool=bindparam("tool"),
            state="started",
            result=None,
            created_at=bindparam("now"),
            fingerprint=bindparam("fingerprint"),
        )
        .returning(idempotency.c.key)
    )
)
_SETTLE = Statement(
    lambda _: (
        update(idempotency).where(_KEY).values(state=bindparam("state"), result=bindparam("result"))
    )
)
_RELEASE = Statement(lambda _: delete(idempotency).where(_KEY))


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
    row = fast.one(conn, _LOOKUP, {"tenant": tenant, "key": key})
    return None if row is None else KeyRecord(row[0], row[1], row[2], row[3])


def peek(engine: Engine, tenant: str, key: str) -> KeyRecord | None:
    """``lookup`` outside a transaction, for the cheap pre-check before deciding."""
    row = fast.read_one(engine, _LOOKUP, {"tenant": tenant, "key": key})
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
    values = {
        "tenant": tenant,
        "key": key,
        "run_id": run_id,
        "action_id": action_id,
        "tool": tool,
        "now": utc_text(now),
        "fingerprint": fingerprint,
    }
    return fast.one(conn, _CLAIM, values) is not None


def _settle(conn: Connection, tenant: str, key: str, state: str, result: str | None) -> None:
    values = {"state": state, "result": result, "tenant": tenant, "key": key}
    fast.run(conn, _SETTLE, values).close()


def settle_done(conn: Connection, tenant: str, key: str, result: Any) -> None:
    _settle(conn, tenant, key, "done", canonical_json(result))


def settle_done_text(conn: Connection, tenant: str, key: str, text: str) -> None:
    """``settle_done`` with the result already canonical JSON."""
    _settle(conn, tenant, key, "done", text)


class Settling:
    """Keys this process settled ``done`` whose row is written with the ledger's next batch
    (``LedgerWriter.defer``), so a repeat here replays at once rather than reading
    ``started`` for the ~0.2 s until then. Another process sees ``started`` meanwhile and
    answers ``in_progress``: the honest answer while the settlement is in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[tuple[str, str], KeyRecord] = {}

    def put(self, tenant: str, key: str, record: KeyRecord) -> None:
        with self._lock:
            self._done[(tenant, key)] = record

    def written(self, tenant: str, key: str, record: KeyRecord) -> None:
        with self._lock:
            if self._done.get((tenant, key)) is record:
                del self._done[(tenant, key)]

    def overlay(self, tenant: str, key: str, found: KeyRecord | None) -> KeyRecord | None:
        """``found`` as read from the store, with a settlement of this process not yet
        written in its place."""
        if found is None or found.state != "started":
            return found
        mine = self._done.get((tenant, key))
        return mine if mine is not None and mine.action_id == found.action_id else found


def settle_unknown(conn: Connection, tenant: str, key: str) -> None:
    _settle(conn, tenant, key, "unknown", None)


def release(conn: Connection, tenant: str, key: str) -> None:
    fast.run(conn, _RELEASE, {"tenant": tenant, "key": key}).close()
