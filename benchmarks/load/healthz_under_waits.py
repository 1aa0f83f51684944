"""``/healthz`` latency of a real ``warden serve`` while approval long-polls are open and a
writer contends for the store (issue 7, hole i: target < 100 ms).

Setup: one ``warden serve`` worker on loopback (the load workflow, ``spec.yaml``), one
pending approval, ``--waits`` open ``GET /v1/approvals/{id}/wait`` requests on it, and a
writer in another process that takes the store's write lock (SQLite ``BEGIN IMMEDIATE``;
PostgreSQL: ``FOR UPDATE`` on the run's row) for 200 ms out of every 250 ms while governed
calls of that run queue behind it. Meanwhile ``/healthz`` is sampled on its own connection,
one request at a time. Before the fix each open wait read the store every 100 ms on the
event loop, and a write waiting for the lock blocked the loop.

    .venv/bin/python benchmarks/load/healthz_under_waits.py                 # SQLite
    .venv/bin/python benchmarks/load/healthz_under_waits.py --store postgresql+psycopg://postgres@127.0.0.1:5432/DB

Prints the median and p99 of ``/healthz`` and a line for ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _key(store: str, role: str, name: str, **binding: Any) -> str:
    from warden.auth import KeyStore
    from warden.store import Store

    db = Store(store)
    try:
        return KeyStore(db).create(
            name=name, role=role, tenant="bench", created_by="bench", **binding
        )[1]
    finally:
        db.dispose()


def _contend(store: str, run_id: str, stop: threading.Event) -> None:
    """Hold the lock a call of the run needs for 200 ms of every 250 ms."""
    if store.startswith("sqlite"):
        db: Any = sqlite3.connect(store.split("///", 1)[1], isolation_level=None, timeout=30)
        take = "BEGIN IMMEDIATE"
    else:
        import psycopg

        db = psycopg.connect(store.replace("postgresql+psycopg", "postgresql"))
        take = "SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE"
    try:
        while not stop.is_set():
            db.execute(take, (run_id,)) if "%s" in take else db.execute(take)
            time.sleep(0.2)
            db.rollback() if not store.startswith("sqlite") else db.execute("ROLLBACK")
            time.sleep(0.05)
    finally:
        db.close()


async def _measure(url: str, agent: str, waits: int, samples: int, store: str) -> list[float]:
    headers = {"Authorization": f"Bearer {agent}"}
    limits = httpx.Limits(max_connections=waits + 64, max_keepalive_connections=waits + 64)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as c:
        r = await c.post("/v1/runs", json={"workflow": "loadbench", "agent": "bench", "task": "h"})
        r.raise_for_status()
        run_id = r.json()["run_id"]
        r = await c.post(f"/v1/runs/{run_id}/actions", json={"tool": "noop", "args": {"x": 10**13}})
        approval = r.json()["approval_id"]
        open_waits = [
            asyncio.create_task(c.get(f"/v1/approvals/{approval}/wait", params={"timeout_s": 60}))
            for _ in range(waits)
        ]
        await asyncio.sleep(2.0)  # the waits are open
        stop = threading.Event()
        writer = threading.Thread(target=_contend, args=(store, run_id, stop), daemon=True)
        writer.start()
        calls: list[asyncio.Task[Any]] = []
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=url, timeout=120) as probe:
            for i in range(samples):
                if i % 10 == 0:  # governed calls of the run queue behind the writer
                    calls.append(
                        asyncio.create_task(
                            c.post(f"/v1/runs/{run_id}/actions", json={"tool": "noop", "args": {"x": i}})
                        )
                    )
                started = time.perf_counter()
                (await probe.get("/healthz")).raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.02)
        stop.set()
        writer.join()
        await asyncio.gather(*calls, return_exceptions=True)
        for task in open_waits:
            task.cancel()
        await asyncio.gather(*open_waits, return_exceptions=True)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=None, help="store URL (default: a temporary SQLite file)")
    parser.add_argument("--waits", type=int, default=500)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    store = args.store or f"sqlite:///{tmp.name}/bench.db"
    port = _free_port()
    env = {**os.environ, "WARDEN_STORE": store}
    server = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port), "--store", store,
         "--spec", str(HERE / "spec.yaml"), "--tools", f"{HERE / 'tools.py'}:tools", "--migrate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise SystemExit(f"warden serve exited: {server.stderr.read().decode() if server.stderr else ''}")
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("warden serve did not start")
            time.sleep(0.1)
        agent = _key(store, "agent", "bench", agent="bench")
        latencies = asyncio.run(_measure(url, agent, args.waits, args.samples, store))
    finally:
        server.terminate()
        try:
            server.wait(40)  # graceful shutdown lets open requests finish (up to 30 s)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        tmp.cleanup()
    latencies.sort()
    median = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    backend = "SQLite" if store.startswith("sqlite") else "PostgreSQL"
    print(f"/healthz with {args.waits} open waits and a contending writer ({backend}, 1 worker):")
    print(f"  median {median:.1f} ms   p99 {p99:.1f} ms   max {latencies[-1]:.1f} ms   n={len(latencies)}")
    verdict = "pass" if p99 < 100 else "FAIL"
    print(
        f"RESULTS: | healthz under {args.waits} waits + writer | {backend} | median {median:.1f} ms"
        f" | p99 {p99:.1f} ms | target p99 < 100 ms: {verdict} |"
    )


if __name__ == "__main__":
    main()
