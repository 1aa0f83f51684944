"""Appending to the ledger.

Events are buffered in process and written in batches (group commit): a read call pays
for building its events, not for a database round trip. A batch is written in one
transaction that locks each stream's head, so writers in other processes chain onto each
other instead of forking. Anything that must be durable *now* — the intent of a write
before its side effect — is written through ``transaction()``, which flushes the buffer in
the same transaction as the caller's own statements.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from warden.ledger._canonical import canonical_json
from warden.ledger._chain import GENESIS, event_hash
from warden.store import Store
from warden.store import _fast as fast


def _now_text() -> str:
    # Same text as store._tables.utc_text, ~3x faster than strftime on this hot path.
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


@dataclass(frozen=True, slots=True)
class _Buffered:
    stream: str
    tenant: str
    run_id: str | None
    ts: str
    type: str
    payload: dict[str, Any]


class LedgerWriter:
    """Buffers events and writes them, chained, in order."""

    def __init__(self, store: Store, *, batch_size: int = 256, max_age_s: float = 0.2) -> None:
        self._store = store
        self._batch_size = batch_size
        self._max_age_s = max_age_s
        self._buffer: list[_Buffered] = []
        self._buffer_lock = threading.Lock()
        # Held from taking the buffer until its transaction commits, so batches from one
        # process reach the database in the order they were appended.
        self._write_lock = threading.RLock()
        # Inside transaction() the buffer is written at commit; an append there must not
        # open a second write transaction (on SQLite it would wait for its own lock).
        self._local = threading.local()
        # A background thread writes full or aged batches, so no governed call pays for a
        # whole batch (measured: a 256-event batch took ~2.3 ms inline, the p99 of reads).
        self._due = threading.Event()
        self._closed = False
        self._flusher: threading.Thread | None = None
        _LIVE_WRITERS.add(self)

    def append(
        self,
        stream: str,
        tenant: str,
        run_id: str | None,
        type: str,
        payload: dict[str, Any],
    ) -> None:
        event = _Buffered(stream, tenant, run_id, _now_text(), type, payload)
        with self._buffer_lock:
            self._buffer.append(event)
            size = len(self._buffer)
        if self._flusher is None:
            self._start_flusher()
        if size >= self._batch_size:
            self._due.set()
            if size >= 8 * self._batch_size and not getattr(self._local, "in_tx", False):
                # The flusher cannot keep up (or the store is down): push back on callers
                # rather than let the buffer grow without bound.
                self.flush()

    def _start_flusher(self) -> None:
        with self._buffer_lock:
            if self._flusher is not None:
                return
            ref = weakref.ref(self)
            due, max_age = self._due, self._max_age_s
            self._flusher = threading.Thread(
                target=_flush_loop,
                args=(ref, due, max_age),
                name="warden-ledger-flush",
                daemon=True,
            )
            self._flusher.start()

    def close(self) -> None:
        """Stop the background flusher and write what is left, durably."""
        self._closed = True
        self._due.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(10)
        self.flush(durable=True)

    def flush(self, *, durable: bool = False) -> None:
        """Write everything buffered so far (fsynced only if ``durable``)."""
        with self._write_lock:
            if not self._buffer:
                return
            with self._store.write(durable=durable) as conn:
                self._write_buffer(conn)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Connection]:
        """A write transaction whose commit also writes every buffered event."""
        with self._write_lock, self._store.write(durable=durable) as conn:
            outer = getattr(self._local, "in_tx", False)
            self._local.in_tx = True
            try:
                yield conn
                self._write_buffer(conn)
            finally:
                self._local.in_tx = outer

    def _write_buffer(self, conn: Connection) -> None:
        with self._buffer_lock:
            events, self._buffer = self._buffer, []
        if not events:
            return
        try:
            write_events(self._store, conn, events)
        except BaseException:
            # Nothing was committed: keep the events, in order, for the next attempt.
            with self._buffer_lock:
                self._buffer[:0] = events
            raise


_LIVE_WRITERS: weakref.WeakSet[LedgerWriter] = weakref.WeakSet()
log = logging.getLogger("warden.ledger")


def _flush_loop(ref: weakref.ref[LedgerWriter], due: threading.Event, max_age_s: float) -> None:
    """Write batches when one is full or every ``max_age_s``; holds the writer weakly so
    an abandoned writer can still be collected."""
    failures = 0
    while True:
        due.wait(max_age_s)
        due.clear()
        writer = ref()
        if writer is None or writer._closed:
            return
        try:
            writer.flush()
            failures = 0
        except Exception:
            # The events stay buffered, in order; try again, backing off.
            failures += 1
            log.exception(
                "ledger flush failed (attempt %d); events kept for the next try", failures
            )
            time.sleep(min(5.0, 0.1 * 2**failures))
        del writer


@atexit.register
def _flush_at_exit() -> None:
    """Buffered events of a process that exits normally are not lost."""
    for writer in list(_LIVE_WRITERS):
        try:
            writer.flush()
        except Exception:
            # Interpreter shutdown: there is no caller left to report to.
            pass


_HEADS = "SELECT stream, seq, hash FROM ledger_heads WHERE stream IN ({})"
_HEAD_UPDATE = "UPDATE ledger_heads SET seq = ?, hash = ? WHERE stream = ?"
_HEAD_INSERT = "INSERT INTO ledger_heads (stream, tenant, seq, hash) VALUES (?, ?, ?, ?)"
_EVENT_COLUMNS = ("stream", "seq", "tenant", "run_id", "ts", "type", "payload", "prev_hash", "hash")


def write_events(store: Store, conn: Connection, events: list[_Buffered]) -> None:
    """Chain ``events`` onto their streams' heads inside ``conn``'s transaction."""
    streams: dict[str, list[_Buffered]] = {}
    for event in events:
        streams.setdefault(event.stream, []).append(event)
    store.lock(conn, *(f"ledger:{s}" for s in streams))
    # One round trip for all heads, one for their updates, one for the events (measured:
    # a 256-event batch over 16 streams took 48 round trips, ~72 µs of CPU per event).
    names = list(streams)
    cur = fast.execute(conn, _HEADS.format(", ".join("?" * len(names))), names)
    heads = {str(s): (int(q), str(h)) for s, q, h in cur.fetchall()}
    cur.close()
    rows: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    inserts: list[tuple[Any, ...]] = []
    for stream, stream_events in streams.items():
        head = heads.get(stream)
        seq, prev = head if head else (0, GENESIS)
        for ev in stream_events:
            seq += 1
            payload = canonical_json(ev.payload)
            digest = event_hash(
                stream=stream,
                seq=seq,
                tenant=ev.tenant,
                run_id=ev.run_id,
                ts=ev.ts,
                type=ev.type,
                payload=payload,
                prev_hash=prev,
            )
            rows.append((stream, seq, ev.tenant, ev.run_id, ev.ts, ev.type, payload, prev, digest))
            prev = digest
        if head:
            updates.append((seq, prev, stream))
        else:
            inserts.append((stream, stream_events[0].tenant, seq, prev))
    if updates:
        fast.execute_many(conn, _HEAD_UPDATE, updates)
    if inserts:
        fast.execute_many(conn, _HEAD_INSERT, inserts)
    fast.insert_many(conn, "ledger_events", _EVENT_COLUMNS, rows)
