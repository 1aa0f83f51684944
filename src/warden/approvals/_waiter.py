"""Waiting for an approval to change, without polling the store per waiter.

A long-poll (``GET /v1/approvals/{id}/wait``, or a governed call's inline wait) used to
read the approval every 50-100 ms from the event loop: 800 open waits were 8,000 queries a
second on one worker. ``ApprovalWaiter`` wakes waits by events instead:

- in this process: ``ApprovalQueue.transition`` tells the waiter about the approval it
  moved (``approval_changed``) inside the transaction that moves it;
- on PostgreSQL, across replicas: that transition also sends ``NOTIFY warden_approvals``,
  which PostgreSQL delivers at commit; one ``LISTEN`` connection per process, in a thread,
  wakes the waits on it (the notification of this process's own transitions included);
- on SQLite, across processes: one poller thread per store checks ``PRAGMA data_version``
  (which changes when any other connection commits) every ``poll_s`` and, only when it
  changed, reads the state of every awaited approval in one query.

A wake means "the approval may have changed": the waiter reads it again (an approval
that escalates stays ``pending``, for instance). All store work happens in the thread,
never on the event loop. A change is seen after it commits: on SQLite a transition made in
this process is announced before its commit, so the thread first waits for the writer's
lock (``BEGIN IMMEDIATE``; the writer holds it until it commits) and then wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from warden.store import Store

log = logging.getLogger("warden.approvals")

#: the PostgreSQL channel; the payload is the approval id
CHANNEL = "warden_approvals"

_LIVE: weakref.WeakSet[ApprovalWaiter] = weakref.WeakSet()
_FOR_STORE: weakref.WeakKeyDictionary[Store, ApprovalWaiter] = weakref.WeakKeyDictionary()
_FOR_STORE_LOCK = threading.Lock()


def approval_changed(conn: Connection, approval_id: str) -> None:
    """Announce, inside the transaction that moved it, that an approval changed state.

    Called by ``ApprovalQueue.transition``. Waits anywhere wake once the change commits
    (never before: a wait woken early would read the old state and sleep again).
    """
    if conn.dialect.name == "postgresql":
        # Delivered by PostgreSQL at commit, to every listening process (this one too),
        # and not at all if the transaction rolls back.
        conn.execute(select(func.pg_notify(CHANNEL, approval_id)))
        return
    for waiter in list(_LIVE):
        if waiter.store.engine is conn.engine:
            waiter._announce(approval_id)


@dataclass(eq=False)
class _Watch:
    """One wait's registration: its loop and the event that wakes it."""

    approval_id: str
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self.event.set)


class Watch:
    """An approval being watched; see ``ApprovalWaiter.watch``."""

    def __init__(self, entry: _Watch) -> None:
        self._entry = entry

    async def changed(self, timeout_s: float) -> bool:
        """Wait until the approval may have changed since the last call (or since the
        watch began); False if ``timeout_s`` passed first."""
        if timeout_s <= 0 and not self._entry.event.is_set():
            return False
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await self._entry.event.wait()
        except TimeoutError:
            return False
        self._entry.event.clear()
        return True


class ApprovalWaiter:
    """Wakes waits on approvals when they change; one per store per process (``for_store``).

    Use ``watch`` around the read-then-wait loop, so that a change between the read and
    the wait is not missed::

        async with waiter.watch(approval_id) as watch:
            while (record := read()).state == "pending" and time_left():
                await watch.changed(time_left())

    ``wait`` is the one-shot form, for a caller that reads again on timeout anyway.
    """

    def __init__(self, store: Store, *, poll_s: float = 0.1) -> None:
        self.store = store
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._watches: dict[str, set[_Watch]] = {}
        self._announced: set[str] = set()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()  # PostgreSQL: LISTEN is in place
        self._closed = False
        _LIVE.add(self)

    @classmethod
    def for_store(cls, store: Store) -> ApprovalWaiter:
        """This process's waiter for ``store`` (made on first use), shared by the server
        and the gateways on that store, so one thread serves every wait."""
        with _FOR_STORE_LOCK:
            found = _FOR_STORE.get(store)
            if found is None or found._closed:
                found = _FOR_STORE[store] = cls(store)
            return found

    @contextlib.asynccontextmanager
    async def watch(self, approval_id: str) -> AsyncIterator[Watch]:
        """Watch one approval: changes that commit from now on wake ``Watch.changed``."""
        entry = _Watch(approval_id, asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise RuntimeError("the approval waiter is closed")
            self._watches.setdefault(approval_id, set()).add(entry)
            self._start()
        try:
            if not (self.store.is_sqlite or self._ready.is_set()):
                # A notification sent before LISTEN is in place would be lost.
                await asyncio.to_thread(self._ready.wait, 10.0)
            yield Watch(entry)
        finally:
            with self._lock:
                entries = self._watches.get(approval_id)
                if entries is not None:
                    entries.discard(entry)
                    if not entries:
                        del self._watches[approval_id]

    async def wait(self, approval_id: str, timeout_s: float) -> None:
        """Return when the approval may have changed, or after ``timeout_s``."""
        async with self.watch(approval_id) as watch:
            await watch.changed(timeout_s)

    def notify(self, approval_id: str) -> None:
        """The approval changed and the change is committed: wake its waits in this
        process now (safe from any thread)."""
        self._wake([approval_id])

    def close(self) -> None:
        """Stop the thread and wake every wait (they read again and find their answer or
        time out); later ``watch`` calls fail."""
        with self._lock:
            self._closed = True
            thread = self._thread
            ids = list(self._watches)
        self._poke.set()
        self._wake(ids)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        _LIVE.discard(self)

    # -- the thread ---------------------------------------------------------------------

    def _announce(self, approval_id: str) -> None:
        """SQLite: a transition of this process is about to commit."""
        with self._lock:
            if approval_id not in self._watches:
                return
            self._announced.add(approval_id)
        self._poke.set()

    def _wake(self, ids: Iterable[str]) -> None:
        with self._lock:
            entries = [e for i in ids for e in self._watches.get(i, ())]
        for entry in entries:
            entry.wake()

    def _start(self) -> None:
        """Start the thread if it is not running (with ``self._lock`` held)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._ready.clear()
        target = self._poll_sqlite if self.store.is_sqlite else self._listen_postgres
        self._thread = threading.Thread(
            target=self._run, args=(target,), name="warden-approval-waiter", daemon=True
        )
        self._thread.start()

    def _run(self, target: Any) -> None:
        while not self._closed:
            try:
                target()
            except Exception:
                log.warning("approval waiter: lost the store; waits poll it again", exc_info=True)
                # Changes while we were blind would be missed: every wait reads again.
                self._wake(list(self._watches))
                self._poke.wait(1.0)
                self._poke.clear()
            if not self._watches:
                with self._lock:
                    if not self._watches:  # idle: a new watch starts another thread
                        self._thread = None
                        return

    def _idle(self) -> bool:
        with self._lock:
            return self._closed or not self._watches

    def _poll_sqlite(self) -> None:
        raw = self.store.engine.raw_connection()
        try:
            db: Any = raw.dbapi_connection

            def version() -> int:
                return int(db.execute("PRAGMA data_version").fetchone()[0])

            before = version()
            last: dict[str, tuple[Any, ...] | None] = {}
            idle_ticks = 0
            while not self._closed:
                self._poke.wait(self.poll_s)
                self._poke.clear()
                with self._lock:
                    announced, self._announced = self._announced, set()
                if announced:
                    # The announcing transaction holds the write lock until it commits.
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("ROLLBACK")
                    self._wake(announced)
                start = version()  # read before the watches are listed: see below
                with self._lock:
                    ids = list(self._watches)
                if not ids:
                    last.clear()
                    idle_ticks += 1
                    if idle_ticks * self.poll_s >= 5.0:
                        return  # the thread ends; the next watch starts another
                    before = start
                    continue
                idle_ticks = 0
                new = [i for i in ids if i not in last]
                if start == before and not new:
                    continue  # nothing committed anywhere since the last look
                now = self._states(db, ids)
                # A new watch began after the last tick's first version read. If nothing
                # committed between that read and now, what we just read is what its
                # caller read; otherwise it may have missed a change: wake it to read again.
                quiet = version() == before
                changed = [
                    i for i in ids if (i not in last and not quiet) or (i in last and now.get(i) != last[i])
                ]
                last = {i: now.get(i) for i in ids}
                before = start
                if changed:
                    self._wake(changed)
        finally:
            raw.close()

    @staticmethod
    def _states(db: Any, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in db.execute(
                "SELECT approval_id, state, role, escalation_level, deadline, decided_at"
                f" FROM approvals WHERE approval_id IN ({marks})",
                chunk,
            ):
                found[row[0]] = tuple(row[1:])
        return found

    def _listen_postgres(self) -> None:
        raw = self.store.engine.raw_connection()
        raw.detach()  # a session of its own, outside the pool, for as long as we listen
        db: Any = raw.dbapi_connection
        try:
            db.autocommit = True
            db.execute(f"LISTEN {CHANNEL}")
            self._ready.set()
            # Waits that began before LISTEN was in place read again.
            self._wake(list(self._watches))
            idle_s = 0.0
            while not self._closed:
                for note in db.notifies(timeout=0.5):
                    self._wake([note.payload])
                if self._idle():
                    idle_s += 0.5
                    if idle_s >= 5.0:
                        return
                else:
                    idle_s = 0.0
        finally:
            self._ready.clear()
            with contextlib.suppress(Exception):
                db.close()


__all__ = ["CHANNEL", "ApprovalWaiter", "Watch", "approval_changed"]
