"""``warden replay`` throughput: N recorded calls re-decided under a candidate spec.

Target (issue 11, §7): 100,000 recorded calls replayed in at most 60 s on a 2-core machine.

The calls are the refund-triage workflow's (``examples/refund_triage/workflow.yaml``):
runs of four calls (``get_ticket``, ``lookup_order``, ``issue_refund`` with its two facts
and two windows, ``send_message``) for 100 customers, so windows fill and some refunds
are denied or sent for approval. A sample of ``--sample`` calls is recorded for real,
through a gateway in process (stub tools); the ledger is then tiled to N calls: copies of
the sample's events and run rows under new run and stream ids, each copy shifted two days
after the last, so every copy's 24-hour windows hold what the sample's held (the copied
rows keep the sample's hashes: this store is for replay, not for ``ledger verify``).

Timed, ``--rounds`` times: ``replay(store, candidate, since=...)`` over every call, reading
the ledger back included. Checked first: the shipped spec replays every call unchanged.
The candidate allows 2 refunds per customer a day (not 3) and refunds up to $80 alone.

    .venv/bin/python -m benchmarks.bench_replay [--calls 100000] [--rounds 3] [--store URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from warden import Gateway, tool
from warden.evals._replay import replay
from warden.spec import load_spec, load_spec_text
from warden.store import Store
from warden.store._tables import ledger_events, runs, utc_text

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "refund_triage" / "workflow.yaml"
CUSTOMERS = 100


def demo_tools() -> list[Any]:
    @tool
    def get_ticket(ticket_id: str) -> dict[str, Any]:
        n = int(ticket_id.split("_")[1])
        return {"id": ticket_id, "customer_id": f"cus_{n % CUSTOMERS}", "body": "refund please"}

    @tool
    def lookup_customer(customer_id: str) -> dict[str, Any]:
        return {"id": customer_id, "name": "Ada", "email": f"{customer_id}@customer.example",
                "tier": "pro" if customer_id.endswith("7") else "basic"}

    @tool
    def lookup_order(order_id: str) -> dict[str, Any]:
        n = int(order_id.split("_")[1])
        return {"id": order_id, "customer_id": f"cus_{n % CUSTOMERS}", "amount": 160.0,
                "refunded": 0.0, "status": "delivered", "payment_method_id": "pm_1"}

    @tool(effect="money")
    def issue_refund(order_id: str, customer_id: str, amount: float, payment_method_id: str,
                     reason: str) -> dict[str, Any]:
        return {"refund_id": f"re_{order_id}", "amount": amount}

    @tool(effect="external_message")
    def send_message(to: str, subject: str, body: str) -> dict[str, Any]:
        return {"sent": True}

    @tool
    def escalate_to_human(ticket_id: str, reason: str) -> dict[str, Any]:
        return {"ok": True}

    @tool
    def delete_customer(customer_id: str) -> dict[str, Any]:
        return {"ok": True}

    return [get_ticket, lookup_customer, lookup_order, issue_refund, send_message,
            escalate_to_human, delete_customer]


def record_sample(url: str, calls: int) -> None:
    gw = Gateway(load_spec(SPEC), demo_tools(), store=url)

    async def go() -> None:
        for n in range(calls // 4):
            customer = f"cus_{n % CUSTOMERS}"
            async with gw.run(tenant="bench", agent="refund-bot", task=f"ticket {n}",
                              task_type="refund_request") as run:
                await run.call("get_ticket", {"ticket_id": f"tkt_{n}"})
                await run.call("lookup_order", {"order_id": f"ord_{n}"})
                await run.call("issue_refund", {
                    "order_id": f"ord_{n}", "customer_id": customer,
                    "amount": float(5 + (n * 37) % 140), "payment_method_id": "pm_1",
                    "reason": "damaged"})
                await run.call("send_message", {
                    "to": f"{customer}@customer.example", "subject": "Your refund",
                    "body": "We refunded you."})

    asyncio.run(go())
    gw.close()


def tile(store: Store, copies: int) -> None:
    """Copies of the sample's events and run rows, each two days after the last."""
    with store.read() as conn:
        events = [dict(r) for r in conn.execute(select(ledger_events)).mappings()]
        run_rows = [dict(r) for r in conn.execute(select(runs)).mappings()]
    for copy in range(1, copies):
        shift = timedelta(days=2 * copy)
        suffix = f"c{copy:04d}"
        rows = []
        for e in events:
            ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00")) + shift
            run_id = e["run_id"]
            new_run = None if run_id is None else run_id[:-5] + suffix
            payload = e["payload"] if run_id is None else e["payload"].replace(run_id, new_run)
            rows.append({**{k: v for k, v in e.items() if k != "id"},
                         "stream": f"{e['stream']}~{suffix}", "run_id": new_run,
                         "ts": utc_text(ts), "payload": payload})
        new_runs = [
            {**r, "run_id": r["run_id"][:-5] + suffix, "started_at": r["started_at"] + shift,
             "finished_at": None if r["finished_at"] is None else r["finished_at"] + shift}
            for r in run_rows
        ]
        with store.write() as conn:
            conn.execute(insert(ledger_events), rows)
            conn.execute(insert(runs), new_runs)


def candidate() -> Any:
    text = SPEC.read_text()
    for old, new in (
        ("window.refunds_per_customer_24h >= 3", "window.refunds_per_customer_24h >= 2"),
        ("args.amount <= 100.0\n    effect: allow", "args.amount <= 80.0\n    effect: allow"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return load_spec_text(text, "candidate.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", help="an empty store (default: a new SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warden-bench-replay-") as tmp:
        url = args.store or f"sqlite:///{Path(tmp) / 'replay.db'}"
        started = time.perf_counter()
        record_sample(url, args.sample)
        recorded = time.perf_counter() - started
        store = Store(url, create=False)
        try:
            tile(store, max(1, args.calls // args.sample))
            built = time.perf_counter() - started
            since = datetime(2000, 1, 1, tzinfo=UTC)
            same = replay(store, load_spec(SPEC), since=since)
            assert same.counts["changed"] == same.counts["not_replayable"] == 0, same.counts
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                report = replay(store, candidate(), since=since)
                times.append(time.perf_counter() - t0)
        finally:
            store.dispose()
    median = statistics.median(times)
    n = len(report.calls)
    print(json.dumps({
        "calls": n,
        "counts": report.counts,
        "same_spec_counts": same.counts,
        "sample_recorded_s": round(recorded, 2),
        "store_built_s": round(built, 2),
        "replay_s": [round(t, 2) for t in times],
        "replay_median_s": round(median, 2),
        "us_per_call": round(median / n * 1e6, 1),
        "target_s": 60,
        "within_target": median <= 60,
    }, indent=2))


if __name__ == "__main__":
    main()
