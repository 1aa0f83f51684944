"""Single statements on PostgreSQL awaited on the event loop (psycopg's async connection).

The server's governed call runs two statements of its own per call (the step claim and
the run save). Handed to a store thread, each costs two thread switches and two loop
wake-ups besides its round trip; measured over HTTP on the 2-core benchmark machine,
about 200 µs of CPU per statement, which took PostgreSQL's allowed-call rate from 1,641/s
to 1,021/s against the kernel before the claim (benchmarks/RESULTS.md, 2026-12-02). Here
the statement is sent and its answer awaited on the loop itself: no thread, no hand-off.

Connections are autocommit (one round trip per statement, as ``Store.autocommit``) and
pooled per event loop, at most ``size`` of them; a caller past that waits for one to be
returned. A connection that fails at the network level is closed, not returned, and the
caller gets the store's ``StoreError`` (HTTP 503), as on the synchronous path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy import Engine

from warden.store._statements import Statement


class AsyncStatements:
    """Statements on one pooled async connection (``Store.async_autocommit``)."""

    def __init__(self, conn: Any, engine: Engine) -> None:
        self._conn = conn
        self._dialect = engine.dialect

    async def one(self, stmt: Statement, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """A compiled ``Statement``'s first row (``None`` if it returns none)."""
        compiled = stmt.compiled(self._dialect)
        cur = await self._conn.execute(compiled.sql, compiled.params(values), prepare=True)
        row = await cur.fetchone()
        return None if row is None else tuple(row)

    async def run(self, stmt: Statement, values: Mapping[str, Any]) -> int:
        """Run a compiled ``Statement``; the number of rows it changed."""
        compiled = stmt.compiled(self._dialect)
        cur = await self._conn.execute(compiled.sql, compiled.params(values), prepare=True)
        return int(cur.rowcount)


class AsyncPool:
    """At most ``size`` autocommit ``psycopg.AsyncConnection`` of one event loop."""

    def __init__(self, engine: Engine, size: int, **connect: Any) -> None:
        self._engine = engine
        self._size = size
        self._connect = connect
        self._idle: list[Any] = []
        self._made = 0
        self._returned = asyncio.Condition()
        self.closed = False

    @contextlib.asynccontextmanager
    async def statements(self) -> AsyncIterator[AsyncStatements]:
        import psycopg

        conn = await self._take()
        healthy = True
        try:
            yield AsyncStatements(conn, self._engine)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            healthy = False
            raise
        except BaseException:
            # A statement error leaves an autocommit connection usable; a cancellation
            # mid-statement may not: only an idle connection goes back.
            healthy = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            raise
        finally:
            await self._give_back(conn, healthy)

    async def _take(self) -> Any:
        import psycopg

        async with self._returned:
            while not self._idle and self._made >= self._size:
                await self._returned.wait()
            if self._idle:
                return self._idle.pop()
            self._made += 1
        try:
            args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
            kwargs.update(self._connect)
            return await psycopg.AsyncConnection.connect(*args, **kwargs, autocommit=True)
        except BaseException:
            async with self._returned:
                self._made -= 1
                self._returned.notify()
            raise

    async def _give_back(self, conn: Any, healthy: bool) -> None:
        async with self._returned:
            if healthy and not self.closed and not conn.closed:
                self._idle.append(conn)
            else:
                self._made -= 1
                close_now(conn)
            self._returned.notify()

    def close(self) -> None:
        """Close the idle connections (from any thread: no await needed); connections in
        use are closed when they come back."""
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            close_now(conn)


def close_now(conn: Any) -> None:
    """Close an async connection without awaiting (libpq's own close is synchronous)."""
    with contextlib.suppress(Exception):
        conn.pgconn.finish()
