"""The console's approval queue with many pending approvals, rendered in-process.

Target (issue 12, §4): the queue page with 1,000 pending approvals renders in < 300 ms on
the server. One real pending refund is made through the API (the demo workflow), then
copied to ``--pending`` approvals (same evidence, new ids and deadlines); the signed-in
page is requested through ASGI (no network), so the time is the server's: session and key
check, the API's listing, the template. The queue shows the 500 soonest (the API's limit).
Wall time and this process's CPU time are both shown: on a busy machine the CPU time is
the steadier figure.

    .venv/bin/python -m benchmarks.bench_console [--pending 1000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, select

from warden.server import ServerSettings, create_app
from warden.store._tables import approvals

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _console_seed import large_refund_tickets, refund_run


async def main(pending: int, rounds: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="warden-bench-console-"))
    os.chdir(home)
    app = create_app(ServerSettings(store=f"sqlite:///{home / 'w.db'}", auto_migrate=True))
    state = app.state.warden
    keys = state.keys
    agent = keys.create(name="bot", role="agent", tenant="acme", created_by="b", agent="refund-bot")[1]
    lead = keys.create(
        name="lead", role="approver", tenant="acme", created_by="b", approval_roles=["support_lead"]
    )[1]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://b", headers={"Authorization": "Bearer " + agent}
    ) as client:
        made = await refund_run(client, large_refund_tickets(home)[0])
    with state.store.read() as conn:
        row = dict(
            conn.execute(select(approvals).where(approvals.c.approval_id == made["approval_id"]))
            .mappings()
            .one()
        )
    copies = []
    for i in range(1, pending):
        copies.append(
            {
                **row,
                "approval_id": f"apr_bench{i:012d}",
                "action_id": f"{row['action_id']}-{i}",
                "idempotency_key": f"{row['idempotency_key']}-{i}",
                "deadline": row["deadline"] + timedelta(seconds=i),
            }
        )
    with state.store.write() as conn:
        conn.execute(insert(approvals), copies)

    async with httpx.AsyncClient(transport=transport, base_url="http://b") as browser:
        form = await browser.get("/ui/signin")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        signed = await browser.post("/ui/signin", data={"csrf": token[1], "key": lead})
        assert signed.status_code == 303
        for path, label in [
            ("/ui/approvals", f"queue page, {pending} pending (500 shown)"),
            ("/ui/approvals/queue", "queue partial (htmx swap)"),
            (f"/ui/approvals/{made['approval_id']}", "one approval with evidence"),
            (f"/ui/runs/{made['run_id']}", "run timeline with explanations (4 steps)"),
        ]:
            times, cpu = [], []
            for _ in range(rounds):
                start, start_cpu = time.perf_counter(), time.process_time()
                r = await browser.get(path)
                times.append((time.perf_counter() - start) * 1000)
                cpu.append((time.process_time() - start_cpu) * 1000)
                assert r.status_code == 200, r.text[:300]
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            print(
                f"{label:<48} median {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms"
                f"  CPU median {statistics.median(cpu):6.1f} ms  ({len(r.content) // 1024} KiB)"
            )
    state.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.pending, args.rounds))
