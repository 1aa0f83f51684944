"""Writing notifications into the outbox, inside the transaction of the event they announce.

A notification sent straight from the code path that records an event is either sent for an
event that then rolls back, or lost when the process dies between commit and send. Writing it
to the ``outbox`` table in the same transaction makes it exist iff the event committed; the
``Dispatcher`` delivers it afterwards, at least once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from warden.errors import UsageError
from warden.ledger import canonical_json
from warden.store._tables import outbox

_KIND_MAX = 40  # outbox.kind is String(40)
_TENANT_MAX = 120


def enqueue(
    conn: Connection, *, tenant: str, kind: str, payload: dict[str, Any], now: datetime
) -> None:
    """Add a pending notification using ``conn``'s open transaction (from ``store.write()``).

    ``payload`` is encoded as canonical JSON; values JSON cannot hold (datetimes, Decimals,
    ...) are converted rather than failing the caller's transaction.
    """
    if now.tzinfo is None:
        raise UsageError("enqueue: now must be a timezone-aware UTC datetime")
    if not kind or len(kind) > _KIND_MAX:
        raise UsageError(f"enqueue: kind must be 1 to {_KIND_MAX} characters, got {kind!r}")
    if not tenant or len(tenant) > _TENANT_MAX:
        raise UsageError(f"enqueue: tenant must be 1 to {_TENANT_MAX} characters")
    if not isinstance(payload, dict):
        raise UsageError(f"enqueue: payload must be a dict, got {type(payload).__name__}")
    conn.execute(
        insert(outbox).values(
            tenant=tenant,
            kind=kind,
            payload=canonical_json(payload),
            state="pending",
            attempts=0,
            next_attempt_at=now,
            lease_until=None,
            created_at=now,
        )
    )
