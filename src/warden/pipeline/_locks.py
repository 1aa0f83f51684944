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

from sqlalchemy import bindparam, delete, func, select

from warden.errors import StoreError
from warden.store import Store
from warden.store import _fast as fast
from warden.store._statements import Statement, insert_ignoring
from warden.store._tables import resource_locks

_KEY = resource_locks.c.key == bindparam("key")
_TAKE = Statement(
    lambda dialect: (
        insert_ignoring(dialect, resource_locks)
        .values(key=bindparam("key"), holder=bindparam("holder"), expires_at=bindparam("until"))
        .returning(resource_locks.c.key)
    )
)
_STEAL = Statement(
    lambda _: delete(resource_locks).where(_KEY, resource_locks.c.expires_at < bindparam("now"))
)
_GIVE = Statement(
    lambda _: delete(resource_locks).where(_KEY, resource_locks.c.holder == bindparam("holder"))
)
_ADVISORY_LOCK = Statement(lambda _: select(func.pg_advisory_lock(bindparam("id"))))
_ADVISORY_UNLOCK = Statement(lambda _: select(func.pg_advisory_unlock(bindparam("id"))))


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
            db.run(_STEAL, {"key": key, "now": now})
            taken = {"key": key, "holder": self._holder, "until": now + self._lease_s}
            return db.one(_TAKE, taken) is not None

    def _give_row(self, key: str) -> None:
        with self._store.autocommit(durable=False) as db:
            db.run(_GIVE, {"key": key, "holder": self._holder})

    # -- PostgreSQL: an advisory lock on a held connection -----------------------------

    def _advisory(self, key: str) -> Any:
        conn = self._store.engine.connect()
        try:
            fast.run(conn, _ADVISORY_LOCK, {"id": _advisory_id(key)}).close()
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    def _unlock(self, conn: Any, key: str) -> None:
        try:
            fast.run(conn, _ADVISORY_UNLOCK, {"id": _advisory_id(key)}).close()
            conn.commit()
        finally:
            conn.close()
