"""What the SLO rollups sink (warden.telemetry.Rollups) adds to a governed read.

    PYTHONPATH=src python -m benchmarks.bench_rollups [ROUNDS]
    PYTHONPATH=src python -m benchmarks.bench_rollups read [STORE_URL]

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


def read_figures(url: str, groups: int = 20, hours: int = 720) -> None:
    """How long ``slo_report`` takes over ``groups`` groups' rollups of ``hours`` hours
    (about 30 counters per group and hour, as a busy workflow writes: ~1,000 events an
    hour per group, so 20 groups over 30 days stand for ~14 million events)."""
    from datetime import UTC, datetime, timedelta

    from warden.store import Store
    from warden.telemetry import slo_report
    from warden.telemetry._rollups import hour_of, write_rows

    store = Store(url, create=True)
    now = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
    rows: dict[tuple[str, str, str, int, str, str], int] = {}
    for g in range(groups):
        wf, tenant, task = f"wf{g % 5}", f"tenant{g // 5}", "triage"
        for h in range(hours):
            bucket = hour_of(now - timedelta(hours=h))
            key = (wf, tenant, task, bucket)
            for metric, n in (
                ("runs_started", 50),
                ("runs_finished", 50),
                ("runs_succeeded", 45),
                ("actions", 1000),
                ("executed", 950),
                ("escalations", 20),
                ("violations", 5),
                ("spend_nusd", 10**9),
                ("unpriced_calls", 1),
            ):
                rows[(*key, metric, "")] = n
            for b in range(40, 60):  # 20 latency buckets: 0.1 ms to 3 s
                rows[(*key, "latency", str(b))] = 47
            rows[(*key, "blocked", "no_vip")] = 5
            rows[(*key, "tool_errors", "lookup")] = 2
    write_rows(store, rows)
    print(f"{len(rows):,} rollup rows ({groups} groups x {hours} h)")
    for label, kwargs in (("all tenants", {}), ("one tenant", {"tenant": "tenant0"})):
        times = []
        for _ in range(5):
            t0 = perf_counter_ns()
            report = slo_report(store, now=now, **kwargs)  # type: ignore[arg-type]
            times.append((perf_counter_ns() - t0) / 1e6)
        print(
            f"slo_report, {label}: median {statistics.median(times):.0f} ms "
            f"({len(report.groups)} groups; runs {[round(t) for t in times]} ms)"
        )
    store.dispose()


if __name__ == "__main__":
    if sys.argv[1:2] == ["read"]:
        if len(sys.argv) > 2:
            read_figures(sys.argv[2])
        else:
            with sqlite_store() as url:
                read_figures(url)
    else:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 7))
