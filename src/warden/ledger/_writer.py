"""Appending to the ledger.

Events are buffered in process and written in batches (group commit): a read call pays
for building its events, not for a database round trip. A batch is written in one
transaction that locks each stream's head, so writers in other processes chain onto each
other instead of forking. Anything that must be durable *now* — the intent of a write
before its side effect — is written through ``transaction()``, which flushes the buffer in
the same transaction as the caller's own statements.

An event is canonicalised when it is appended, before the call that made it is answered:
a value that cannot be stored (a lone surrogate, a field longer than its column) is refused
there, with ``InvalidInputError`` naming where it is, and the flush writes the text made
then. Should the store still refuse a batch for something in one event, that event alone is
replaced by an ``unrecordable`` marker in its place (same stream, same position in the
chain) and the rest is written: one bad event never blocks or drops the others.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, get_args

from sqlalchemy import Connection

from warden.errors import InvalidInputError, first_line
from warden.events import EventKind
from warden.ledger._canonical import canonical_json
from warden.ledger._chain import GENESIS, event_hash
from warden.ledger._export import hold_for_export
from warden.store import Store
from warden.store import _fast as fast

_second: tuple[int, str] = (-1, "")  # a whole second and its text, one tuple: swapped whole


def _now_text() -> str:
    """Now as store._tables.utc_text writes it, ``2026-12-02T09:23:17.123456Z``; the part up
    to the second is formatted once a second (this runs for every event)."""
    global _second
    now = time.time()
    whole = int(now)
    cached, prefix = _second
    if cached != whole:
        prefix = datetime.fromtimestamp(whole, UTC).isoformat()[:19]
        _second = (whole, prefix)
    return f"{prefix}.{int((now - whole) * 1_000_000):06d}Z"


class _Buffered(NamedTuple):
    """One event waiting for its batch (a tuple: a frozen dataclass's ``__init__`` cost
    ~0.25 µs more per event, three or more events per governed call)."""

    stream: str
    tenant: str
    run_id: str | None
    ts: str
    type: str
    payload: str  # canonical JSON, made once at append


# The widths of ledger_events' columns (store/_tables.py): a longer value would make the
# whole batch fail on PostgreSQL, so it is refused at append instead.
_WIDTHS = (("stream", 80), ("tenant", 120), ("run_id", 40), ("type", 40))


# Event types the pipeline writes (warden.events.EventKind): storable by construction.
_KINDS = frozenset(get_args(EventKind))


def _check_field(name: str, value: str, width: int) -> None:
    if len(value) > width:
        raise InvalidInputError(
            f"ledger event {name} is {len(value)} characters long (at most {width}); not recorded"
        )
    if "\x00" in value or not _encodable(value):
        raise InvalidInputError(
            f"ledger event {name} {ascii(value)[:80]} is not storable text "
            "(a NUL character or a lone surrogate); not recorded"
        )


def _encodable(text: str) -> bool:
    if text.isascii():  # the common case, ~20x cheaper than encoding
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _bad_path(value: Any, path: str = "") -> str | None:
    """Where in ``value`` the first string that is not valid Unicode text is."""
    if isinstance(value, str):
        return None if _encodable(value) else (path or "<payload>")
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodable(key):
                return f"the key {key!a} of {path or '<payload>'}"
            found = _bad_path(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _bad_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def canonical_payload(type: str, payload: dict[str, Any]) -> str:
    """The payload's canonical JSON, or ``InvalidInputError`` naming what cannot be stored."""
    try:
        text = canonical_json(payload)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidInputError(
            f"a {type} event cannot be written as JSON ({type_name(exc)}: {first_line(exc)});"
            " not recorded"
        ) from None
    if not _encodable(text):
        where = _bad_path(json.loads(text)) or "<payload>"
        raise InvalidInputError(
            f"{where} is not valid Unicode text (a lone surrogate such as \\ud800);"
            f" the {type} event cannot be recorded"
        )
    return text


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


class LedgerWriter:
    """Buffers events and writes them, chained, in order."""

    def __init__(self, store: Store, *, batch_size: int = 256, max_age_s: float = 0.2) -> None:
        self._store = store
        self._batch_size = batch_size
        self._max_age_s = max_age_s
        self._buffer: list[_Buffered] = []
        # Statements that commit with the next batch (``defer``), in order.
        self._deferred: list[_Deferred] = []
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
        # Envelopes (stream, tenant, run) whose fields passed _check_field (bounded).
        self._checked: set[tuple[str, str, str | None]] = set()
        _LIVE_WRITERS.add(self)

    def append(
        self,
        stream: str,
        tenant: str,
        run_id: str | None,
        type: str,
        payload: dict[str, Any],
    ) -> None:
        """Buffer one event; ``InvalidInputError`` (and nothing buffered) if any of it
        cannot be stored."""
        envelope = (stream, tenant, run_id)
        if envelope not in self._checked:  # a run's events share one: checked once
            for (name, width), value in zip(_WIDTHS, envelope, strict=False):
                if value is not None:
                    _check_field(name, value, width)
            if len(self._checked) >= 4096:
                self._checked.clear()
            self._checked.add(envelope)
        if type not in _KINDS:
            _check_field("type", type, 40)
        event = _Buffered(
            stream, tenant, run_id, _now_text(), type, canonical_payload(type, payload)
        )
        with self._buffer_lock:
            self._buffer.append(event)
            size = len(self._buffer)
        if self._flusher is None:
            self._start_flusher()
        if size >= self._batch_size:
            if not self._due.is_set():  # set() takes a lock and notifies: once is enough
                self._due.set()
            if size >= 8 * self._batch_size and not getattr(self._local, "in_tx", False):
                # The flusher cannot keep up (or the store is down): push back on callers
                # rather than let the buffer grow without bound.
                self.flush()

    def buffered_since(self) -> datetime | None:
        """When the oldest event still waiting to be written was appended (None: none
        waits): the writer's flush lag, for metrics."""
        buffer = self._buffer
        if not buffer:
            return None
        try:
            return datetime.fromisoformat(buffer[0].ts)
        except IndexError:  # written by the flusher in between
            return None

    def defer(self, op: Callable[[Connection], None], after: Callable[[], None]) -> None:
        """Run ``op`` in the transaction that writes the next batch, after its events;
        ``after()`` once it committed, or was given up (failed twice alone: logged).

        For bookkeeping that must commit with the events already buffered, not before them,
        and is not worth a transaction of its own on the caller's path (the settlement of an
        idempotency key with its ``executed`` event: measured ~250 µs of thread hand-off per
        governed write on this 2-core VM, a quarter of the call)."""
        with self._buffer_lock:
            self._deferred.append(_Deferred(op, after))
        if self._flusher is None:
            self._start_flusher()

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
            if not self._buffer and not self._deferred:
                return
            try:
                with self._store.write(durable=durable) as conn:
                    done = self._write_buffer(conn)
            except Exception:
                self._isolate(durable)
            else:
                _after(done)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Connection]:
        """A write transaction whose commit also writes every buffered event."""
        with self._write_lock:
            outer = getattr(self._local, "in_tx", False)
            batch_failed = False
            done: list[_Deferred] = []
            try:
                with self._store.write(durable=durable) as conn:
                    self._local.in_tx = True
                    try:
                        yield conn
                        try:
                            done = self._write_buffer(conn)
                        except Exception:
                            batch_failed = True
                            raise
                    finally:
                        self._local.in_tx = outer
                _after(done)
            except Exception:
                if batch_failed and not outer:
                    # This caller's transaction is lost; the next one must not meet the
                    # same batch again.
                    try:
                        self._isolate(durable=False)
                    except Exception:
                        log.exception("ledger: buffered events kept for the next flush")
                raise

    def _isolate(self, durable: bool) -> None:
        """After a batch failed: write its events one at a time, in order.

        An event the store refuses while a marker in its place is accepted is bad in
        itself: the marker (type ``unrecordable``) takes its place in the chain. If the
        marker fails too, the store is down: everything not yet written stays buffered, in
        order, and the error is raised for the caller or the flusher to retry.
        """
        with self._buffer_lock:
            events, self._buffer = self._buffer, []
            deferred, self._deferred = self._deferred, []
        done = 0
        try:
            for event in events:
                try:
                    self._write_alone(event, durable)
                except Exception:
                    try:  # once more: a transient failure must not cost an event
                        self._write_alone(event, durable)
                    except Exception as exc:
                        self._write_alone(_unrecordable(event, exc), durable)
                        log.error(
                            "ledger: the store refused a %s event on stream %s (%s); recorded"
                            " an unrecordable marker in its place",
                            event.type,
                            event.stream,
                            first_line(exc),
                        )
                done += 1
        finally:
            if done < len(events):
                with self._buffer_lock:
                    self._buffer[:0] = events[done:]
                    self._deferred[:0] = deferred
        for item in deferred:
            try:
                self._run_alone(item, durable)
            except Exception as exc:
                try:
                    self._run_alone(item, durable)
                except Exception:
                    log.error(
                        "ledger: a deferred statement failed twice and was given up (%s)",
                        first_line(exc),
                    )
            _after([item])

    def _run_alone(self, item: _Deferred, durable: bool) -> None:
        with self._store.write(durable=durable) as conn:
            item.op(conn)

    def _write_alone(self, event: _Buffered, durable: bool) -> None:
        with self._store.write(durable=durable) as conn:
            write_events(self._store, conn, [event])

    def _write_buffer(self, conn: Connection) -> list[_Deferred]:
        """Write the buffer in ``conn``'s transaction; the deferred statements it ran (their
        ``after`` is for the caller to call once the transaction committed)."""
        with self._buffer_lock:
            events, self._buffer = self._buffer, []
            deferred, self._deferred = self._deferred, []
        try:
            if events:
                write_events(self._store, conn, events)
            for item in deferred:
                item.op(conn)
        except BaseException:
            # Nothing was committed: keep everything, in order, for the next attempt.
            with self._buffer_lock:
                self._buffer[:0] = events
                self._deferred[:0] = deferred
            raise
        return deferred


@dataclass(frozen=True, slots=True)
class _Deferred:
    op: Callable[[Connection], None]
    after: Callable[[], None]


def _after(done: list[_Deferred]) -> None:
    for item in done:
        try:
            item.after()
        except Exception:  # bookkeeping of the caller's; the write itself is committed
            log.exception("ledger: a deferred statement's callback failed")


def _unrecordable(event: _Buffered, exc: BaseException) -> _Buffered:
    """What the ledger keeps of an event the store refused: which event, and why."""
    detail = ascii(first_line(exc))[1:-1]
    payload = {
        "type": event.type,
        "error": f"{type_name(exc)}: {detail}",
        "payload_sha256": hashlib.sha256(event.payload.encode(errors="replace")).hexdigest(),
    }
    return _Buffered(
        event.stream, event.tenant, event.run_id, event.ts, "unrecordable", canonical_json(payload)
    )


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


def flush_writers(store: Store) -> None:
    """Write what every ledger writer of this process holds for ``store``: an export or a
    checkpoint then has every call answered so far (reads are answered before their
    batch is written)."""
    for writer in list(_LIVE_WRITERS):
        if writer._store is store and not writer._closed:
            writer.flush()


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
            payload = ev.payload
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
    hold_for_export(conn)  # from the ids' allocation to the commit (see ledger._export)
    fast.insert_many(conn, "ledger_events", _EVENT_COLUMNS, rows)
