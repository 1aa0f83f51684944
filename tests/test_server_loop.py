"""Nothing blocks the server's event loop (issue 7, hole i).

Store work of the request handlers runs in threads, so a statement waiting for a lock
holds up only its own request; long-polls on approvals are woken by events (in process,
LISTEN/NOTIFY on PostgreSQL, one shared poller on SQLite), not by a query per wait every
100 ms. Served in process through ``httpx.ASGITransport``, on SQLite and PostgreSQL; the
latency figure (``/healthz`` < 100 ms with 500 open waits and a contending writer) is
measured by ``benchmarks/load/healthz_under_waits.py`` against a real ``warden serve``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SPEC
from sqlalchemy import event

from warden.auth import KeyStore
from warden.server import ServerSettings, create_app

TESTS = Path(__file__).parent
PAY_300 = {"order_id": "o1", "customer_id": "c1", "amount": 300.0}
WAITS = 500


class Api:
    def __init__(self, app: Any, keys: dict[str, str]) -> None:
        self.app = app
        self.keys = keys
        self.clients: list[httpx.AsyncClient] = []

    def client(self, who: str) -> httpx.AsyncClient:
        made = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://warden.test",
            headers={"Authorization": f"Bearer {self.keys[who]}"},
            timeout=120,
        )
        self.clients.append(made)
        return made


@pytest.fixture
async def make_api(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[], Api]]:
    """In-process servers (replicas) on one store; the first one makes the keys."""
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(tmp_path / "effects.db"))
    spec = tmp_path / "shop.yaml"
    spec.write_text(SPEC)
    made: list[Api] = []

    def build() -> Api:
        settings = ServerSettings(
            store=store_url,
            specs=[str(spec)],
            tools=[f"{TESTS / 'server_tools.py'}:tools"],
            auto_migrate=True,
        )
        app = create_app(settings)
        if made:
            keys = made[0].keys
        else:
            store = KeyStore(app.state.warden.store)
            keys = {
                who: store.create(name=who, role=role, tenant="acme", created_by="t", **bound)[1]
                for who, role, bound in [
                    ("bot", "agent", {"agent": "bot"}),
                    ("lead", "approver", {"approval_roles": ["lead"]}),
                ]
            }
        api = Api(app, keys)
        made.append(api)
        return api

    yield build
    for api in made:
        for client in api.clients:
            await client.aclose()
        api.app.state.warden.close()


async def _pending_payment(api: Api) -> tuple[str, str]:
    bot = api.client("bot")
    r = await bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "loop"})
    assert r.status_code == 201, r.text
    run_id: str = r.json()["run_id"]
    r = await bot.post(f"/v1/runs/{run_id}/actions", json={"tool": "pay", "args": PAY_300})
    assert r.json()["status"] == "pending", r.text
    approval_id: str = r.json()["approval_id"]
    return run_id, approval_id


@contextmanager
def _row_locked(store_url: str, run_id: str) -> Iterator[threading.Event]:
    """Another process's writer holding the lock that the run's next call needs (SQLite's
    write lock; the run's row on PostgreSQL) until the yielded event is set, or for 20 s at
    most, so that a server that blocks its loop on the lock cannot hang the suite."""
    release = threading.Event()
    holding = threading.Event()
    timed_out: list[bool] = []

    def hold() -> None:
        if store_url.startswith("sqlite"):
            conn: Any = sqlite3.connect(store_url.split("///", 1)[1], isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            conn = psycopg.connect(store_url.replace("postgresql+psycopg", "postgresql"))
            conn.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run_id,))
        holding.set()
        timed_out.append(not release.wait(20))
        conn.rollback()
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait()
    try:
        yield release
    finally:
        release.set()
        thread.join()
    # The lock must have been let go because the server answered, not at the 20 s bound.
    assert timed_out == [False]


async def test_healthz_answers_while_a_call_waits_for_a_writers_lock(
    make_api: Callable[[], Api], store_url: str
) -> None:
    api = make_api()
    bot = api.client("bot")
    run_id, _ = await _pending_payment(api)
    # A governed call of the run waits for another writer's lock, off the loop: the
    # process keeps answering meanwhile.
    with _row_locked(store_url, run_id) as release:
        call = asyncio.create_task(
            bot.post(
                f"/v1/runs/{run_id}/actions",
                json={"tool": "get_order", "args": {"order_id": "o1"}},
            )
        )
        await asyncio.sleep(0.5)  # the call reaches the lock
        health = await api.client("bot").get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert not call.done()  # it is still waiting for the lock
        release.set()
    answered = await call
    assert answered.status_code == 200 and answered.json()["status"] == "allowed", answered.text


async def test_open_waits_cost_no_queries_and_a_decision_wakes_them(
    make_api: Callable[[], Api],
) -> None:
    api = make_api()
    bot, lead = api.client("bot"), api.client("lead")
    _, approval_id = await _pending_payment(api)
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    engine = api.app.state.warden.store.engine
    event.listen(engine, "before_cursor_execute", count)
    waits = [
        asyncio.create_task(bot.get(f"/v1/approvals/{approval_id}/wait", params={"timeout_s": 60}))
        for _ in range(WAITS)
    ]
    # The waits open: each reads its approval once (through the store threads, which may
    # take a while for 500 with one thread); wait until those first reads are done: two
    # quiet half-seconds in a row (one alone can be a pause of a busy machine).
    quiet = 0
    for _ in range(120):
        statements = 0
        await asyncio.sleep(0.5)
        quiet = quiet + 1 if statements < WAITS // 10 else 0
        if quiet >= 2:
            break
    health = await bot.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    # In a second with nothing decided, fewer statements than there are waits go to the
    # store (polling every 100 ms would send ten per wait).
    statements = 0
    await asyncio.sleep(1.0)
    assert statements < WAITS
    assert not any(w.done() for w in waits)
    event.remove(engine, "before_cursor_execute", count)

    decided = await lead.post(
        f"/v1/approvals/{approval_id}/decision", json={"decision": "approve", "rationale": "ok"}
    )
    assert decided.status_code == 200, decided.text
    answers = await asyncio.gather(*waits)
    assert {(r.status_code, r.json()["state"]) for r in answers} == {(200, "approved")}


async def test_a_decision_on_another_replica_wakes_the_wait(
    make_api: Callable[[], Api],
) -> None:
    """Across processes: LISTEN/NOTIFY on PostgreSQL, the shared poller on SQLite."""
    one, two = make_api(), make_api()
    _, approval_id = await _pending_payment(one)
    wait = asyncio.create_task(
        one.client("bot").get(f"/v1/approvals/{approval_id}/wait", params={"timeout_s": 60})
    )
    await asyncio.sleep(0.5)  # the wait is open
    assert not wait.done()
    decided = await two.client("lead").post(
        f"/v1/approvals/{approval_id}/decision", json={"decision": "reject", "rationale": "no"}
    )
    assert decided.status_code == 200, decided.text
    answer = await wait
    assert answer.status_code == 200 and answer.json()["state"] == "rejected", answer.text


async def test_a_wait_that_times_out_answers_pending(make_api: Callable[[], Api]) -> None:
    api = make_api()
    _, approval_id = await _pending_payment(api)
    r = await api.client("bot").get(f"/v1/approvals/{approval_id}/wait", params={"timeout_s": 0.2})
    assert r.status_code == 200 and r.json()["state"] == "pending", r.text
