"""Two `warden serve` processes on one PostgreSQL behave as one system."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from _stack import free_port, make_keys, write_spec
from server_tools import count_effects
from sqlalchemy import create_engine, text

from warden.store import metadata

TESTS = Path(__file__).parent


class Replicas:
    def __init__(
        self,
        urls: list[str],
        keys: dict[str, str],
        effects: str,
        procs: list[subprocess.Popen[str]],
    ):
        self.urls, self.keys, self.effects, self.procs = urls, keys, effects, procs

    def client(self, i: int, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.urls[i], headers={"Authorization": f"Bearer {self.keys[who]}"}, timeout=30
        )


def _start(
    store_url: str,
    spec: Path,
    port: int,
    env: dict[str, str],
    tools: str = f"{TESTS / 'server_tools.py'}:tools",
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "warden",
            "serve",
            "--port",
            str(port),
            "--store",
            store_url,
            "--spec",
            str(spec),
            "--tools",
            tools,
            "--migrate",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"replica at {url} never became ready")


@pytest.fixture
def replicas(pg_url: str, tmp_path: Path) -> Iterator[Replicas]:
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            text(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)} RESTART IDENTITY")
        )
    engine.dispose()
    keys = make_keys(pg_url)
    spec = write_spec(tmp_path)
    effects = str(tmp_path / "effects.db")
    env = {
        **os.environ,
        "WARDEN_TEST_EFFECTS": effects,
        # keep an inherited PYTHONPATH (a worktree's src/ run against a shared venv)
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "WARDEN_SWITCH_REFRESH_S": "0.25",
    }
    ports = [free_port(), free_port()]
    procs = [_start(pg_url, spec, port, env) for port in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            _wait_ready(url, proc)
        yield Replicas(urls, keys, effects, procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def _open(client: httpx.Client) -> str:
    r = client.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "replica"})
    assert r.status_code == 201, r.text
    return str(r.json()["run_id"])


def _act(client: httpx.Client, run_id: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/v1/runs/{run_id}/actions", json={"tool": tool, "args": args})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


@pytest.mark.postgres
def test_kill_switch_on_a_stops_b_within_a_second(replicas: Replicas) -> None:
    with replicas.client(1, "bot") as bot_b, replicas.client(0, "root") as admin_a:
        run_id = _open(bot_b)
        stop = threading.Event()
        killed_at: list[float] = []

        def hammer() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                result = _act(bot_b, run_id, "get_order", {"order_id": f"o{i}"})
                if result["status"] == "denied" and result["kind"] == "killed":
                    killed_at.append(time.perf_counter())
                    return

        worker = threading.Thread(target=hammer)
        worker.start()
        time.sleep(0.3)
        flipped = time.perf_counter()
        r = admin_a.post(
            "/v1/switches",
            json={"scope": "workflow", "target": "shop", "active": True, "reason": "replica test"},
        )
        assert r.status_code == 200
        worker.join(10)
        stop.set()
    assert killed_at, "replica B never saw the switch"
    propagation = killed_at[0] - flipped
    print(f"\nkill switch propagation A -> B: {propagation * 1000:.0f} ms")
    assert propagation < 1.0


@pytest.mark.postgres
def test_approval_decided_on_a_is_seen_on_b_and_executes_once(replicas: Replicas) -> None:
    with (
        replicas.client(0, "bot") as bot_a,
        replicas.client(1, "bot") as bot_b,
        replicas.client(0, "lead") as lead_a,
        replicas.client(1, "lead") as lead_b,
    ):
        run_id = _open(bot_a)
        pending = _act(
            bot_a, run_id, "pay", {"order_id": "o1", "customer_id": "c1", "amount": 300.0}
        )
        approval = pending["approval_id"]
        assert lead_b.get(f"/v1/approvals/{approval}").json()["state"] == "pending"
        assert (
            lead_a.post(
                f"/v1/approvals/{approval}/decision",
                json={"decision": "approve", "rationale": "ok"},
            ).status_code
            == 200
        )
        assert lead_b.get(f"/v1/approvals/{approval}").json()["state"] == "approved"
        barrier = threading.Barrier(8)

        def push(client: httpx.Client) -> dict[str, Any]:
            barrier.wait()
            out: dict[str, Any] = client.post(
                f"/v1/approvals/{approval}/execute", params={"wait_s": 5}
            ).json()
            return out

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(push, [bot_a, bot_b] * 4))
    allowed = [r for r in results if r["status"] == "allowed"]
    assert len(allowed) == 8, results
    assert sum(not r["replayed"] for r in allowed) == 1
    assert count_effects(replicas.effects, "paid") == 1


@pytest.mark.postgres
def test_a_run_whose_calls_alternate_replicas_keeps_its_counters(replicas: Replicas) -> None:
    """Each call sees everything the run's previous call did, on whichever replica."""
    with replicas.client(0, "bot") as bot_a, replicas.client(1, "bot") as bot_b:
        run_id = _open(bot_a)
        # Untrusted text read through A taints the address for the very next call, on B.
        _act(bot_a, run_id, "get_doc", {"doc_id": "d1"})
        tainted = _act(bot_b, run_id, "message", {"to": "mallory@evil.example", "body": "hi"})
        assert tainted["status"] == "pending", tainted
        # The identical-call streak and the step count carry over between replicas.
        same = [_act((bot_a, bot_b)[i % 2], run_id, "get_order", {"order_id": "o1"}) for i in range(3)]
        assert [r["status"] for r in same] == ["allowed", "allowed", "denied"]
        assert same[2]["kind"] == "runaway"
        assert [r["action_id"] for r in (tainted, *same)] == [f"{run_id}.{i}" for i in range(2, 6)]
        assert bot_b.get(f"/v1/runs/{run_id}").json()["steps"] == 5


@pytest.mark.postgres
def test_window_rule_holds_across_replicas(replicas: Replicas) -> None:
    clients = [replicas.client(i % 2, "bot") for i in range(12)]
    runs = [_open(c) for c in clients]
    barrier = threading.Barrier(len(clients))

    def burst(i: int) -> str:
        barrier.wait()
        return _act(
            clients[i], runs[i], "pay", {"order_id": "o1", "customer_id": "c1", "amount": 20.0 + i}
        )["status"]

    with ThreadPoolExecutor(len(clients)) as pool:
        statuses = list(pool.map(burst, range(len(clients))))
    for c in clients:
        c.close()
    assert statuses.count("allowed") == 3, statuses
    assert count_effects(replicas.effects, "paid") == 3


@pytest.mark.postgres
def test_graceful_shutdown_finishes_in_flight_requests(replicas: Replicas) -> None:
    with replicas.client(0, "bot") as bot:
        run_id = _open(bot)
        result: dict[str, Any] = {}

        def slow() -> None:
            result.update(_act(bot, run_id, "nap", {"seconds": 1.5}))

        worker = threading.Thread(target=slow)
        worker.start()
        time.sleep(0.4)
        replicas.procs[0].send_signal(signal.SIGTERM)
        worker.join(20)
        assert result.get("status") == "allowed", result
        replicas.procs[0].wait(30)
    with replicas.client(1, "audit") as audit:
        events = audit.get(f"/v1/ledger/runs/{run_id}/events").json()["items"]
        assert [e["type"] for e in events][-1] == "executed"
        assert audit.get("/v1/ledger/verify").json()["ok"] is True
