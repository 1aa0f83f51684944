"""Locks on a resource held from a call's fact lookups through its side effect.

A tool declared with ``serialize_on: args.order_id`` makes decide-and-execute atomic per
order: two refunds of one order cannot both read "paid 52.50, refunded 0" and both pass.
The lock is the store's, so it holds across threads, processes and replicas:

- PostgreSQL: a session-level advisory lock on a connection held for the call (released
  by the server if the process dies);
- SQLite: a row in ``resource_locks`` with a lease (a crashed holder's row expires after
  ``lease_s``), taken with ``INSERT ... ON CONFLICT DO NOTHING`` and polled while taken.

In front of either, an ``asyncio.Lock`` per key in this process, so concurrent calls of one
process queue without polling the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from warden.errors import StoreError
from warden.store import Store
from warden.store import _fast as fast

_TAKE = (
    "INSERT INTO resource_locks (key, holder, expires_at) VALUES (?, ?, ?)"
    " ON CONFLICT DO NOTHING RETURNING key"
)
_STEAL = "DELETE FROM resource_locks WHERE key = ? AND expires_at < ?"
_GIVE = "DELETE FROM resource_locks WHERE key = ? AND holder = ?"


def _advisory_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class ResourceLocks:
    def __init__(self, store: Store, *, lease_s: float = 300.0, wait_s: float = 60.0) -> None:
        self._store = store
        self._lease_s = lease_s
        self._wait_s = wait_s
        self._local: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        local = self._local.get(key)
        if local is None:
            local = asyncio.Lock()
            self._local[key] = local
        async with local:
            if self._store.is_sqlite:
                await self._take_row(key)
                try:
                    yield
                finally:
                    await asyncio.to_thread(self._give_row, key)
            else:
                conn = await asyncio.to_thread(self._advisory, key)
                try:
                    yield
                finally:
                    await asyncio.to_thread(self._unlock, conn, key)

    # -- SQLite: a leased row --------------------------------------------------------

    async def _take_row(self, key: str) -> None:
        until = time.monotonic() + self._wait_s
        delay = 0.002
        while not await asyncio.to_thread(self._try_row, key):
            if time.monotonic() > until:
                raise StoreError(f"resource {key!r} stayed locked for {self._wait_s:g}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _try_row(self, key: str) -> bool:
        now = time.time()
        with self._store.autocommit(durable=False) as db:
            db.execute(_STEAL, (key, now))
            return db.fetch_one(_TAKE, (key, self._holder, now + self._lease_s)) is not None

    def _give_row(self, key: str) -> None:
        with self._store.autocommit(durable=False) as db:
            db.execute(_GIVE, (key, self._holder))

    # -- PostgreSQL: an advisory lock on a held connection -----------------------------

    def _advisory(self, key: str) -> Any:
        conn = self._store.engine.connect()
        try:
            fast.execute(conn, "SELECT pg_advisory_lock(?)", (_advisory_id(key),)).close()
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    def _unlock(self, conn: Any, key: str) -> None:
        try:
            fast.execute(conn, "SELECT pg_advisory_unlock(?)", (_advisory_id(key),)).close()
            conn.commit()
        finally:
            conn.close()
