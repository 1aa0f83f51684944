"""``Store.without_waiting``: single statements on the event loop only when they cannot
wait (SQLite with its write lock free); otherwise ``WouldWait`` with nothing changed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from warden.store import Store
from warden.store._engine import WouldWait
from warden.store._statements import Statement


def _bump(store: Store) -> int:
    stmt = Statement(lambda _: text("UPDATE counter SET n = n + 1"))
    with store.autocommit() as db:
        return db.run(stmt, {})


def _count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT n FROM counter")).scalar_one())


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    with store.write() as conn:
        conn.execute(text("CREATE TABLE counter (n INTEGER)"))
        conn.execute(text("INSERT INTO counter VALUES (0)"))
    return store


def test_a_statement_runs_at_once_when_the_write_lock_is_free(sqlite_store: Store) -> None:
    try:
        assert sqlite_store.without_waiting(_bump, sqlite_store) == 1
        assert _count(sqlite_store) == 1
    finally:
        sqlite_store.dispose()


def test_a_held_write_lock_is_would_wait_at_once_and_changes_nothing(
    sqlite_store: Store, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
        with pytest.raises(WouldWait):
            sqlite_store.without_waiting(_bump, sqlite_store)
        other.execute("COMMIT")
        assert _count(sqlite_store) == 0
        # The same work in a thread (what the server then does) waits and succeeds.
        assert _bump(sqlite_store) == 1
    finally:
        other.close()
        sqlite_store.dispose()


def test_transactions_and_durable_commits_are_never_done_without_a_thread(
    sqlite_store: Store,
) -> None:
    def transaction() -> None:
        with sqlite_store.write(durable=False) as conn:
            conn.execute(text("UPDATE counter SET n = 5"))

    def durable() -> None:
        with sqlite_store.autocommit(durable=True) as db:
            db.execute("UPDATE counter SET n = 6")

    try:
        for fn in (transaction, durable):
            with pytest.raises(WouldWait):
                sqlite_store.without_waiting(fn)
        assert _count(sqlite_store) == 0
    finally:
        sqlite_store.dispose()


def test_postgresql_always_goes_to_a_thread(store_url: str) -> None:
    if store_url.startswith("sqlite"):
        pytest.skip("PostgreSQL only")
    store = Store(store_url)
    try:
        with pytest.raises(WouldWait):
            store.without_waiting(lambda: None)
    finally:
        store.dispose()


def _bump_where(store: Store, threads: list[str]) -> int:
    import threading

    threads.append(threading.current_thread().name)
    return _bump(store)


def test_a_lock_held_for_a_moment_is_waited_for_on_the_loop(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """The server's step claim and run save stay on the loop when the lock is free within
    a few ms (a ledger batch): no store-thread hand-off, and nothing done twice."""
    import asyncio
    import threading

    other = sqlite3.connect(
        tmp_path / "w.db", isolation_level=None, timeout=0, check_same_thread=False
    )
    threads: list[str] = []
    try:
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.001, lambda: other.execute("COMMIT")).start()

        async def claim() -> int:
            return await sqlite_store.without_waiting_soon(_bump_where, sqlite_store, threads)

        assert asyncio.run(claim()) == 1
        assert _count(sqlite_store) == 1
        assert set(threads) == {threading.current_thread().name}  # tried on the loop only
    finally:
        other.close()
        sqlite_store.dispose()


def test_a_lock_held_longer_is_would_wait_after_a_few_ms(
    sqlite_store: Store, tmp_path: Path
) -> None:
    import asyncio
    import time

    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(WouldWait):
            asyncio.run(sqlite_store.without_waiting_soon(_bump, sqlite_store))
        assert time.monotonic() - started < 0.5  # gives up soon: the thread takes over
        other.execute("COMMIT")
        assert _count(sqlite_store) == 0
    finally:
        other.close()
        sqlite_store.dispose()
