"""What the SLO rollups sink (warden.telemetry.Rollups) adds to a governed read.

    PYTHONPATH=src python -m benchmarks.bench_rollups [ROUNDS]

One gateway (``bench_warden.governed_gateway``, 20 rules, SQLite in a temporary
directory), 3,000 governed reads of ``noop`` per round, rounds interleaved with the sink
in and out of the gateway's sinks; prints each round's median and the median of them.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
from time import perf_counter_ns

from warden import Gateway
from warden.telemetry import Rollups

from .bench_warden import governed_gateway, sqlite_store


async def _round(gw: Gateway, calls: int, start: int) -> float:
    async with gw.run(tenant="bench", agent="bench-agent", task="bench") as run:
        for i in range(500):  # warm-up
            await run.call("noop", {"x": start + i})
        gw.flush()
        samples: list[int] = []
        gc.collect()
        gc.disable()
        try:
            for i in range(calls):
                t0 = perf_counter_ns()
                await run.call("noop", {"x": start + 500 + i})
                samples.append(perf_counter_ns() - t0)
        finally:
            gc.enable()
        gw.flush()
    return statistics.median(samples) / 1000


async def main(rounds: int) -> None:
    on: list[float] = []
    off: list[float] = []
    with sqlite_store() as url:
        gw = governed_gateway(20, url)
        sinks = gw.svc.sinks
        without = [s for s in sinks if not isinstance(s, Rollups)]
        for r in range(rounds):
            gw.svc.sinks = sinks
            on.append(await _round(gw, 3000, r * 10_000))
            gw.svc.sinks = without
            off.append(await _round(gw, 3000, r * 10_000 + 5000))
        gw.close()
    m_on, m_off = statistics.median(on), statistics.median(off)
    print(f"with rollups   : {m_on:.1f} µs (round medians {[round(v, 1) for v in on]})")
    print(f"without rollups: {m_off:.1f} µs (round medians {[round(v, 1) for v in off]})")
    print(f"ratio {m_on / m_off:.3f} ({m_on - m_off:+.1f} µs)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 7))
