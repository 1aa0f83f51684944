"""Reading the ledger back: one run's timeline, or everything as JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from sqlalchemy import select

from warden.events import Event, parse_event
from warden.store import Store
from warden.store._tables import ledger_events


@dataclass(frozen=True)
class LedgerEvent:
    id: int
    stream: str
    seq: int
    tenant: str
    run_id: str | None
    ts: str
    type: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def event(self) -> Event:
        """The typed event (``warden.events``); ``ValidationError`` if the payload does not
        fit its kind's model."""
        return parse_event(self.type, self.payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stream": self.stream,
            "seq": self.seq,
            "tenant": self.tenant,
            "run_id": self.run_id,
            "ts": self.ts,
            "type": self.type,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def iter_events(
    store: Store,
    *,
    run_id: str | None = None,
    tenant: str | None = None,
    after_seq: int = 0,
    limit: int | None = None,
) -> Iterator[LedgerEvent]:
    """Events in chain order (by stream, then seq); ``after_seq`` and ``limit`` page
    through one run's stream."""
    query = select(ledger_events).order_by(ledger_events.c.stream, ledger_events.c.seq)
    if after_seq:
        query = query.where(ledger_events.c.seq > after_seq)
    if limit is not None:
        query = query.limit(limit)
    if run_id is not None:
        query = query.where(ledger_events.c.run_id == run_id)
    if tenant is not None:
        query = query.where(ledger_events.c.tenant == tenant)
    with store.read() as conn:
        for row in conn.execute(query).mappings():
            yield LedgerEvent(
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


def export_jsonl(store: Store, out: TextIO, *, tenant: str | None = None) -> int:
    """Write every event as one JSON object per line; returns how many were written."""
    n = 0
    for event in iter_events(store, tenant=tenant):
        out.write(json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        n += 1
    return n
