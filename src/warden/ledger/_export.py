"""Incremental export: the ledger in pages, each ending at a cursor the next page resumes from.

The cursor is the ledger's row id (``ledger_events.id``), handed out as an opaque string:
one sequence for the whole database, so any replica answers the same page for the same
cursor. Rows are returned in id order, which within each stream is chain order (a stream's
appends hold its head's lock), so pages concatenated are an export that
``warden ledger verify --export`` checks like a full one.

A page must never skip a row that becomes visible later with a lower id. On SQLite one
writer at a time commits in id order. On PostgreSQL ids come from a sequence and
transactions commit in any order, so every ledger append takes a shared advisory lock
(``EXPORT_LOCK``) from its insert to its commit, and a page ends at the *watermark*: the
highest id visible at a moment when no append held that lock (taken with a try-lock, so an
export never queues in front of writers nor joins a deadlock). Rows above the watermark
wait for the next page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from warden.errors import UsageError
from warden.ledger._read import LedgerEvent
from warden.store import Store
from warden.store import _fast as fast
from warden.store._tables import ledger_events

# (classid, objid) of PostgreSQL's two-key advisory locks: a key space apart from the
# one-key locks of Store.lock.
EXPORT_LOCK = (0x57415244, 1)  # "WARD"
_SHARED = "SELECT pg_advisory_xact_lock_shared(?, ?)"
_TRY = "SELECT pg_try_advisory_xact_lock(?, ?)"
MAX_PAGE = 5000


def hold_for_export(conn: Connection) -> None:
    """Called by every ledger append before it inserts (PostgreSQL; a no-op on SQLite):
    the export's watermark waits until the append committed or rolled back."""
    if conn.dialect.name == "postgresql":
        fast.execute(conn, _SHARED, EXPORT_LOCK).close()


def encode_cursor(row_id: int) -> str:
    return str(row_id)


def decode_cursor(cursor: str | None) -> int:
    """The row id a cursor stands for (0: from the beginning); ``UsageError`` for a
    cursor this server never handed out."""
    if cursor is None or cursor == "":
        return 0
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
        raise UsageError(f"after={cursor[:40]!r} is not a ledger export cursor")
    return int(cursor)


@dataclass(frozen=True)
class ExportPage:
    events: list[LedgerEvent]
    # Where the next page starts; equal to the request's cursor when nothing new was safe
    # to hand out yet.
    next: str
    # PostgreSQL: appends held the export lock at every try, so no watermark was taken;
    # the page is empty and the caller may try again.
    busy: bool = False

    def lines(self) -> Iterator[str]:
        for event in self.events:
            yield json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"


def watermark(store: Store, *, attempts: int = 50, pause_s: float = 0.01) -> int | None:
    """The highest row id below which every row is committed or rolled back; None on
    PostgreSQL if appends held the lock at every one of ``attempts`` tries."""
    if store.is_sqlite:
        with store.read() as conn:
            top = conn.execute(select(func.coalesce(func.max(ledger_events.c.id), 0)))
            return int(top.scalar_one())
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause_s)
        with store.read() as conn:
            got = fast.fetch_one(conn, _TRY, EXPORT_LOCK)
            if got is not None and got[0]:
                # Read committed: this statement sees every append that released the lock.
                top = conn.execute(select(func.coalesce(func.max(ledger_events.c.id), 0)))
                return int(top.scalar_one())
    return None


def export_page(
    store: Store,
    *,
    after: str | None = None,
    limit: int = 1000,
    tenant: str | None = None,
    attempts: int = 50,
) -> ExportPage:
    """Up to ``limit`` events after the cursor ``after``, in id order; ``tenant``: only that
    tenant's events (of the shared ``switches`` stream too). ``attempts``: tries at the
    watermark (see ``watermark``); a server passes 1 and retries off its store threads."""
    start = decode_cursor(after)
    limit = max(1, min(limit, MAX_PAGE))
    top = watermark(store, attempts=attempts)
    if top is None:
        return ExportPage([], encode_cursor(start), busy=True)
    if top <= start:
        return ExportPage([], encode_cursor(start))
    query = (
        select(ledger_events)
        .where(ledger_events.c.id > start, ledger_events.c.id <= top)
        .order_by(ledger_events.c.id)
        .limit(limit)
    )
    if tenant is not None:
        query = query.where(ledger_events.c.tenant == tenant)
    with store.read() as conn:
        rows = [_event(row) for row in conn.execute(query).mappings()]
    if len(rows) < limit:
        # Everything up to the watermark was read (a tenant's page may have skipped other
        # tenants' rows): resume after it, not after the last row returned.
        return ExportPage(rows, encode_cursor(top))
    return ExportPage(rows, encode_cursor(rows[-1].id))


def _event(row: Any) -> LedgerEvent:
    return LedgerEvent(
        id=row["id"],
        stream=row["stream"],
        seq=row["seq"],
        tenant=row["tenant"],
        run_id=row["run_id"],
        ts=row["ts"],
        type=row["type"],
        payload=json.loads(row["payload"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )
