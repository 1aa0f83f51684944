"""The console's dashboards over a million ledger events, rendered in-process.

Target (issue 12, §4): dashboards over one million ledger events answer in < 1 s. The
store gets ``--runs`` runs (default 100,000) of ten ledger events each, spread over the
last 30 days, in two workflows and four tenants: opened, three tool calls (one of them
denied by a rule, escalated or failed for some runs), two priced model calls, finished. The
rows are inserted directly (executemany); the rollups are then made from that ledger by
``warden.telemetry.rebuild``, the code ``warden slo --rebuild`` runs. Then the signed-in
page (``/ui/dashboards``) and ``GET /v1/dashboard`` are requested through ASGI (no network)
for each window, ``--rounds`` times: the time is the server's (session and key check, the
rollup reads, the charts, the template).

    PYTHONPATH=src python -m benchmarks.bench_dashboards [--runs 100000] [--rounds 20]
        [--store postgresql+psycopg://...]   # default: a new SQLite file
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select

from warden.server import ServerSettings, create_app
from warden.store import Store
from warden.store._tables import ledger_events, runs, slo_rollups
from warden.telemetry import rebuild

TENANTS = ("acme", "globex", "initech", "umbrella")
WORKFLOWS = ("refund_triage", "refund_triage", "refund_triage", "billing")
RULES = ("refund_cap", "vip_customer", "no_self_refund")
HASH = "0" * 64


def _events(i: int, run_id: str, tenant: str, at: datetime) -> list[dict[str, Any]]:
    """Ten events of one run, as the pipeline records them (the fields the rollups read)."""
    ts = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the ledger's own form, 27 characters
    variant = i % 10
    last: tuple[str, dict[str, Any]]
    if variant == 0:
        last = ("denied", {"kind": "policy_block", "rules": [RULES[i % 3]]})
    elif variant == 1:
        last = ("approval_requested", {"approval_id": f"apr_{i}"})
    elif variant == 2:
        last = ("failed", {"kind": "tool_error", "action_id": f"{run_id}.3"})
    else:
        last = ("executed", {"action_id": f"{run_id}.3", "ms": 3.0 + i % 40, "cost_usd": "0.001"})
    outcome = "completed" if variant >= 2 else "escalated"
    made = [
        ("run_started", {"workflow": WORKFLOWS[i % 4]}),
        ("action_requested", {"action_id": f"{run_id}.1", "tool": "get_ticket", "step": 1}),
        ("executed", {"action_id": f"{run_id}.1", "ms": 1.5 + i % 7}),
        ("usage", {"model": "small", "cost_usd": "0.00042"}),
        ("action_requested", {"action_id": f"{run_id}.2", "tool": "lookup_order", "step": 2}),
        ("executed", {"action_id": f"{run_id}.2", "ms": 2.0 + i % 11}),
        ("usage", {"model": "large" if i % 5 == 0 else "small", "cost_usd": "0.0031"}),
        ("action_requested", {"action_id": f"{run_id}.3", "tool": "issue_refund", "step": 3}),
        last,
        ("run_finished", {"outcome": outcome}),
    ]
    return [
        {
            "stream": run_id,
            "seq": n,
            "tenant": tenant,
            "run_id": run_id,
            "ts": ts,
            "type": kind,
            "payload": json.dumps(payload),
            "prev_hash": HASH,
            "hash": HASH,
        }
        for n, (kind, payload) in enumerate(made, start=1)
    ]


def seed(store: Store, n_runs: int, now: datetime) -> None:
    span = timedelta(days=30).total_seconds()
    chunk = 5000
    for first in range(0, n_runs, chunk):
        run_rows, event_rows = [], []
        for i in range(first, min(n_runs, first + chunk)):
            run_id = f"run_bench{i:010d}"
            tenant = TENANTS[(i // 4) % 4]
            at = now - timedelta(seconds=span * i / n_runs)
            run_rows.append(
                {
                    "run_id": run_id,
                    "tenant": tenant,
                    "workflow": WORKFLOWS[i % 4],
                    "workflow_version": "1",
                    "spec_fingerprint": HASH,
                    "agent": "refund-bot",
                    "task": f"ticket {i}",
                    "task_type": "refund_request",
                    "tier": "autonomous",
                    "status": "finished",
                    "outcome": "completed",
                    "started_at": at,
                    "finished_at": at,
                }
            )
            event_rows.extend(_events(i, run_id, tenant, at))
        with store.write() as conn:
            conn.execute(insert(runs), run_rows)
            conn.execute(insert(ledger_events), event_rows)


def _timed(label: str, times: list[float], cpu: list[float], size: int) -> None:
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(
        f"{label:<34} median {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms"
        f"  CPU median {statistics.median(cpu):6.1f} ms  ({size // 1024} KiB)",
        flush=True,
    )


async def main(n_runs: int, rounds: int, store_url: str | None) -> None:
    home = Path(tempfile.mkdtemp(prefix="warden-bench-dash-"))
    os.chdir(home)
    url = store_url or f"sqlite:///{home / 'w.db'}"
    app = create_app(ServerSettings(store=url, auto_migrate=True))
    state = app.state.warden
    store = state.store
    now = datetime.now(UTC)
    started = time.perf_counter()
    seed(store, n_runs, now)
    seeded = time.perf_counter()
    read = rebuild(store)
    built = time.perf_counter()
    with store.read() as conn:
        events = conn.execute(select(func.count()).select_from(ledger_events)).scalar_one()
        rows = conn.execute(select(func.count()).select_from(slo_rollups)).scalar_one()
    print(
        f"{store.engine.dialect.name}: {events:,} ledger events ({n_runs:,} runs) inserted in "
        f"{seeded - started:.1f} s; rollups rebuilt from {read:,} events in "
        f"{built - seeded:.1f} s: {rows:,} rollup rows; load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        flush=True,
    )
    admin = state.keys.create(name="root", role="admin", tenant="*", created_by="b")[1]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://b") as browser:
        form = await browser.get("/ui/signin")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        signed = await browser.post("/ui/signin", data={"csrf": token[1], "key": admin})
        assert signed.status_code == 303
        headers = {"Authorization": "Bearer " + admin}
        for window in ("30d", "7d", "1h"):
            for path, label, extra in [
                (f"/ui/dashboards?window={window}", f"page, {window}, all tenants", {}),
                (f"/v1/dashboard?window={window}", f"JSON, {window}, all tenants", headers),
                (
                    f"/ui/dashboards?window={window}&tenant=acme&workflow=refund_triage",
                    f"page, {window}, one tenant+workflow",
                    {},
                ),
            ]:
                times, cpu = [], []
                size = 0
                for _ in range(rounds):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    r = await browser.get(path, headers=extra)
                    times.append((time.perf_counter() - start) * 1000)
                    cpu.append((time.process_time() - start_cpu) * 1000)
                    assert r.status_code == 200, r.text[:300]
                    size = len(r.content)
                _timed(label, times, cpu, size)
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    state.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--store", default=None, help="a store URL (default: new SQLite)")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.rounds, args.store))
