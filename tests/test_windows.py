"""Window rules under concurrency: "at most 3 per customer per day" allows exactly 3."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import Effects, make_gateway

from warden import Allowed, Denied, Gateway

N = 10


def _pay(gateway: Gateway, i: int, customer: str = "c1") -> object:
    async def go() -> object:
        async with gateway.run(tenant="t", agent="bot", task=f"pay {i}") as run:
            return await run.call(
                "pay", {"order_id": "o1", "customer_id": customer, "amount": 10.0 + i}
            )

    return asyncio.run(go())


def test_window_counts_and_resets(store_url: str, effects: Effects) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    gw = make_gateway(store_url, effects, clock=lambda: now[0])
    results = [_pay(gw, i) for i in range(4)]
    assert [type(r) for r in results] == [Allowed, Allowed, Allowed, Denied]
    assert isinstance(results[3], Denied) and results[3].rules == ("three_per_day",)
    assert isinstance(_pay(gw, 9, customer="c2"), Denied)  # c2 fails own_order_only, not the window
    now[0] += timedelta(hours=25)
    assert isinstance(_pay(gw, 5), Allowed)  # the window slid past the first three
    gw.close()


def test_denied_and_rejected_actions_do_not_count(gateway: Gateway, effects: Effects) -> None:
    async def go() -> None:
        run = gateway.open_run(tenant="t", agent="bot", task="big")  # open: its approval pends
        big = await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 500.0})
        assert not isinstance(big, Allowed) and hasattr(big, "approval_id")
        await gateway.reject(big.approval_id, approver="lead@x", roles=["lead"], rationale="no")

    asyncio.run(go())
    results = [_pay(gateway, i) for i in range(3)]
    assert all(isinstance(r, Allowed) for r in results)


def test_threads_racing_the_window_allow_exactly_three(store_url: str, effects: Effects) -> None:
    gw = make_gateway(store_url, effects)
    barrier = threading.Barrier(N)
    results: list[object] = [None] * N

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = _pay(gw, i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    gw.close()
    assert sum(isinstance(r, Allowed) for r in results) == 3
    assert sum(isinstance(r, Denied) for r in results) == N - 3
    assert len(effects.paid) == 3


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    sys.path.insert(0, {tests!r})
    from conftest import Effects, make_gateway
    from warden import Allowed

    effects = Effects()
    gw = make_gateway({url!r}, effects)
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)

    async def main():
        async with gw.run(tenant="t", agent="bot", task="proc " + sys.argv[1]) as run:
            r = await run.call("pay", {{"order_id": "o1", "customer_id": "c1", "amount": 20.0}})
        print(json.dumps({{"allowed": isinstance(r, Allowed), "paid": len(effects.paid)}}))

    asyncio.run(main())
    gw.close()
    """
)


def test_processes_racing_the_window_allow_exactly_three(store_url: str, tmp_path: Path) -> None:
    make_gateway(store_url, Effects()).close()  # schema exists before the race
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), url=store_url))
    start = time.time() + 4.0  # every process imports and connects, then all go at once
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(o["allowed"] for o in outs) == 3
    assert sum(o["paid"] for o in outs) == 3  # side effects, counted in each process
