"""Engines and transactions for the embedded SQLite default and for PostgreSQL.

Transactions that must survive a power cut before anything else happens — a write's
intent, an approval decision — are durable: they wait for an fsync (~0.3 ms here). Records
whose loss a crash would make visible anyway — a batch of read events, the outcome after an
intent, a run's counters — are not: on SQLite (WAL mode) they commit with
``synchronous=NORMAL``, on PostgreSQL on a second pool whose sessions have
``synchronous_commit=off``. Either way they are visible to every other connection at
commit and reach the disk with the next durable commit (or within a fraction of a second),
in order, so a crash can lose the last of them but never one without the ones before. Write
transactions on SQLite use ``BEGIN IMMEDIATE`` so that the database write lock is taken
at the start: two processes racing a window rule serialize on it instead of both reading
the old count.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from warden.errors import StoreError, UsageError, first_line
from warden.store import _fast as fast
from warden.store._async import AsyncPool, AsyncStatements


def _close_quietly(raw: Any) -> None:
    try:
        raw.close()
    except Exception:  # already broken: nothing left to release
        pass


def _unavailable(exc: BaseException) -> StoreError:
    return StoreError(f"the store is unavailable: {first_line(exc)}")


def default_store_url() -> str:
    """``WARDEN_STORE`` if set, else a SQLite file under ``./.warden/``."""
    return os.environ.get("WARDEN_STORE") or "sqlite:///.warden/warden.db"


def _switch_to_wal(cur: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried: on a new file that several processes open at
    once, SQLite answers "database is locked" at once, without its busy handler (seen in
    tests/test_migrations.py, about one run in ten)."""
    deadline = time.monotonic() + 30
    delay = 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _sqlite_connect_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        _switch_to_wal(cur)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("warden_write", False):
            # synchronous is per connection and cannot change inside a transaction.
            sync = "FULL" if options.get("warden_durable", True) else "NORMAL"
            info = conn.connection.info
            if info.get("warden_sync") != sync:
                conn.exec_driver_sql(f"PRAGMA synchronous={sync}")
                info["warden_sync"] = sync
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


P = ParamSpec("P")
T = TypeVar("T")

#: set while ``Store.without_waiting`` runs a function on the caller's (event loop) thread
_NO_WAIT: ContextVar[bool] = ContextVar("warden_store_no_wait", default=False)
#: ``without_waiting_soon``: the pauses between its attempts on the loop
_NO_WAIT_PAUSES_S = (0.0005, 0.001, 0.002)


class WouldWait(Exception):
    """``Store.without_waiting``: the work would have to wait (a lock held by another
    connection, or a store that always crosses the network); nothing was changed."""


_LOCK_MANY = "SELECT pg_advisory_xact_lock(k) FROM unnest(?::bigint[]) AS t(k) ORDER BY k"


class Store:
    """One database: the engine plus the few transaction shapes Warden uses."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:
            # No pre-ping: it costs a round trip per checkout on the hot path; a dead
            # connection fails one request (503) and is dropped from the pool.
            kwargs.update(pool_size=10, max_overflow=20, pool_recycle=1800)
        try:
            self.engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            from warden.store._migrate import display_url

            raise StoreError(f"cannot open store {display_url(url)}: {exc}") from exc
        self._relaxed: Engine | None = None
        # PostgreSQL: each thread's own autocommit connections (see autocommit()).
        self._sessions: dict[tuple[int, bool], tuple[threading.Thread, Any]] = {}
        self._sessions_lock = threading.Lock()
        # SQLite: the connection of without_waiting() and the thread that owns it.
        self._no_wait: tuple[int, Any] | None = None
        # PostgreSQL: async autocommit connections per event loop (see async_autocommit()).
        self._async_pools: dict[asyncio.AbstractEventLoop, AsyncPool] = {}
        if self.is_sqlite:
            _sqlite_connect_hooks(self.engine)
        if create:  # else leave the schema alone (see check_schema)
            try:
                self.create_schema()
            except BaseException:
                self.engine.dispose()
                raise

    def create_schema(self) -> None:
        """Migrate the schema to the newest revision (creating it in an empty database).

        Cheap when the store is already current; safe when several processes do it at once.
        """
        from warden.store._migrate import upgrade

        upgrade(self)

    def check_schema(self) -> None:
        """Raise ``StoreError`` (naming the fix) unless the schema is at the newest revision."""
        from warden.store._migrate import check_current

        check_current(self)

    def _engine_for(self, durable: bool) -> Engine:
        if durable or self.is_sqlite:  # SQLite: per-connection PRAGMA (see _on_begin)
            return self.engine
        if self._relaxed is None:
            # Measured here (psycopg, loopback): a one-row UPDATE commits in 515 µs with
            # synchronous_commit=on and 183 µs with it off.
            self._relaxed = create_engine(
                self.url,
                connect_args={"options": "-c synchronous_commit=off"},
                pool_size=5,
                max_overflow=15,
                pool_recycle=1800,
            )
        return self._relaxed

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        """A write transaction that holds the locks it needs until commit.

        ``durable=False``: commit without waiting for the fsync (see the module docstring).
        """
        if _NO_WAIT.get():
            raise WouldWait("a write transaction may wait for the write lock")
        conn = self._engine_for(durable).connect().execution_options(
            warden_write=True, warden_durable=durable
        )
        with conn, conn.begin():
            yield conn

    @contextmanager
    def autocommit(self, *, durable: bool = False) -> Iterator[fast.Statements]:
        """A DB-API connection in autocommit mode, for single statements on the hot path
        (``?`` placeholders through ``warden.store._fast``); not to be held across an
        ``await``.

        One round trip per statement: no BEGIN, COMMIT or reset ROLLBACK (measured: a
        primary-key SELECT took 135 µs this way and 380 µs in a transaction). On
        PostgreSQL each thread keeps its own connection, outside the pool (measured: a
        pool checkout plus the autocommit switches cost ~70 µs of CPU per statement).
        """
        if _NO_WAIT.get():
            if durable or not self.is_sqlite:
                raise WouldWait("a durable commit waits for the disk")
            raw = self._no_wait_connection()
            yield fast.Statements(
                raw.dbapi_connection, self.engine.dialect.paramstyle, self.engine.dialect
            )
            return
        if not self.is_sqlite:
            raw = self._session(durable)
            try:
                yield fast.Statements(
                    raw.dbapi_connection, self.engine.dialect.paramstyle, self.engine.dialect
                )
            except Exception as exc:
                errors = self.engine.dialect.loaded_dbapi
                if isinstance(exc, errors.OperationalError | errors.InterfaceError):
                    # The connection is gone (restart, failover): so, probably, are the
                    # pool's. Close them all (closing a dead one is local, and a merely
                    # dereferenced one would be closed by the garbage collector, with a
                    # ResourceWarning, at some random later moment).
                    self._drop_session(durable)
                    self._engine_for(durable).dispose()
                    raise _unavailable(exc) from exc
                raise
            return
        try:
            raw = self.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc
        try:
            # The connect hook left sqlite3 in autocommit (isolation_level=None).
            sync = "FULL" if durable else "NORMAL"
            if raw.info.get("warden_sync") != sync:
                raw.dbapi_connection.execute(f"PRAGMA synchronous={sync}")  # type: ignore[union-attr]
                raw.info["warden_sync"] = sync
            yield fast.Statements(
                raw.dbapi_connection, self.engine.dialect.paramstyle, self.engine.dialect
            )
        finally:
            raw.close()

    def without_waiting(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` here and now if the store can do it without waiting;
        else ``WouldWait`` (nothing changed): do it in a worker thread instead.

        For an event loop's single-statement hot path (the server's step claim and run
        save): on SQLite a statement that finds the write lock free takes tens of µs, less
        than handing it to a thread and back (profiled over HTTP: ~170 µs of CPU and two
        loop wake-ups a hand-off). Its connection never waits for a lock (busy timeout 0:
        a held lock is ``WouldWait`` at once) and never checkpoints the WAL (the other
        connections do), so it does no more than append to the WAL in the page cache.
        Only ``autocommit()`` statements run this way: a ``write()`` transaction, and any
        statement on PostgreSQL (a network round trip), raise ``WouldWait``.
        """
        if not self.is_sqlite:
            raise WouldWait("PostgreSQL statements cross the network")
        token = _NO_WAIT.set(True)
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise WouldWait(str(exc)) from exc
            raise
        finally:
            _NO_WAIT.reset(token)

    async def without_waiting_soon(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``without_waiting``, tried again on the event loop after 0.5, 1 and 2 ms (the
        loop serves others meanwhile) before ``WouldWait``.

        On SQLite the write lock is mostly held for a moment (a ledger batch, another
        worker's statement): a short wait on the loop is far cheaper than the store thread
        a ``WouldWait`` sends the statement to, and it keeps the next statements on the
        loop too (once some go to threads, the threads' statements hold the lock when the
        loop tries, and every call follows them). Measured over HTTP, SQLite,
        ``--workers 2``, C = 16 (``benchmarks/load``): deny 2,282 -> 2,993 calls/s and
        635 -> 541 µs of CPU a call; allow 1,882 -> 2,413/s; p99 66 -> 52 and 39 ms."""
        for pause in _NO_WAIT_PAUSES_S if self.is_sqlite else ():
            try:
                return self.without_waiting(fn, *args, **kwargs)
            except WouldWait:
                await asyncio.sleep(pause)
        return self.without_waiting(fn, *args, **kwargs)

    @asynccontextmanager
    async def async_autocommit(self) -> AsyncIterator[AsyncStatements]:
        """``autocommit()`` awaited on the event loop, PostgreSQL only (``UsageError`` on
        SQLite, whose statements are local: see ``without_waiting``). Not durable: the
        commit does not wait for the WAL flush, as ``autocommit(durable=False)``."""
        if self.is_sqlite:
            raise UsageError("async_autocommit is for PostgreSQL; SQLite uses without_waiting")
        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop)
        if pool is None:
            for old in [old for old in self._async_pools if old.is_closed()]:
                self._async_pools.pop(old).close()
            # Up to 8 connections a loop: a statement takes ~0.2 ms, so 8 serve thousands
            # of calls a second; past that a call waits for one rather than open more.
            pool = self._async_pools[loop] = AsyncPool(
                self.engine, 8, options="-c synchronous_commit=off"
            )
        errors = self.engine.dialect.loaded_dbapi
        try:
            async with pool.statements() as db:
                yield db
        except (errors.OperationalError, errors.InterfaceError) as exc:
            raise _unavailable(exc) from exc

    def _no_wait_connection(self) -> Any:
        """The calling thread's connection for without_waiting (one thread owns it: the
        event loop's); ``WouldWait`` from any other thread."""
        me = threading.get_ident()
        found = self._no_wait
        if found is not None:
            if found[0] != me:
                raise WouldWait("the no-wait connection belongs to another thread")
            return found[1]
        with self._sessions_lock:
            if self._no_wait is not None:
                return self._no_wait_connection()
            try:
                raw = self.engine.raw_connection()
            except SQLAlchemyError as exc:
                raise _unavailable(exc) from exc
            raw.detach()  # ours until dispose()
            db = raw.dbapi_connection
            db.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
            db.execute("PRAGMA wal_autocheckpoint=0")  # type: ignore[union-attr]
            db.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]
            self._no_wait = (me, raw)
            return raw

    def _session(self, durable: bool) -> Any:
        """This thread's autocommit connection (PostgreSQL), made on first use."""
        key = (threading.get_ident(), durable)
        found = self._sessions.get(key)
        if found is not None and found[0] is threading.current_thread():
            return found[1]
        with self._sessions_lock:
            # Connections of threads that have ended are closed here, not leaked.
            for old, (thread, raw) in list(self._sessions.items()):
                if not thread.is_alive() or old == key:
                    del self._sessions[old]
                    _close_quietly(raw)
            try:
                raw = self._engine_for(durable).raw_connection()
            except SQLAlchemyError as exc:
                raise _unavailable(exc) from exc
            raw.detach()  # ours until closed; the pool makes another in its place
            raw.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            self._sessions[key] = (threading.current_thread(), raw)
            return raw

    def _drop_session(self, durable: bool) -> None:
        with self._sessions_lock:
            found = self._sessions.pop((threading.get_ident(), durable), None)
        if found is not None:
            _close_quietly(found[1])

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @property
    def for_update(self) -> str:
        """The suffix that locks a selected row until commit (SQLite: none needed, its
        ``BEGIN IMMEDIATE`` already holds the database write lock)."""
        return "" if self.is_sqlite else " FOR UPDATE"

    def lock(self, conn: Connection, *keys: str) -> None:
        """Serialize writers on ``keys`` until the transaction ends.

        SQLite's BEGIN IMMEDIATE already holds the database write lock; PostgreSQL takes a
        transaction-scoped advisory lock per key (sorted, so two writers never deadlock).
        """
        if self.is_sqlite:
            return
        ids = sorted({zlib.crc32(key.encode()) - 2**31 for key in keys})
        if len(ids) == 1:
            fast.execute(conn, "SELECT pg_advisory_xact_lock(?)", (ids[0],)).close()
        else:  # one round trip for all, taken in order
            fast.execute(conn, _LOCK_MANY, (ids,)).close()

    def dispose(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = list(self._sessions.values()), {}
            no_wait, self._no_wait = self._no_wait, None
        for _thread, raw in sessions:
            _close_quietly(raw)
        pools, self._async_pools = list(self._async_pools.values()), {}
        for pool in pools:
            pool.close()
        if no_wait is not None:
            _close_quietly(no_wait[1])
        self.engine.dispose()
        if self._relaxed is not None:
            self._relaxed.dispose()
