"""Profile the governed-call loop (or the policy engine) and list the hot spots.

    python -m benchmarks.profile_warden read  [--calls 5000] [--rules 100] [--top 25]
    python -m benchmarks.profile_warden write [--calls 1000]
    python -m benchmarks.profile_warden policy [--calls 50000]
    python -m benchmarks.profile_warden write --postgres [URL]

Runs the same gateway as ``bench_warden`` (SQLite ledger in a temporary directory, or a
throwaway PostgreSQL database) under
``cProfile`` and prints, per function, the cumulative and own time in µs per governed
call (or per decision). cProfile slows pure-Python code down much more than C and I/O, so
the profiled µs are inflated; the header gives the unprofiled mean of the same loop so
the figures can be scaled. ``benchmarks.bench_warden.stage_breakdown`` gives unbiased
wall-clock figures per pipeline stage.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from .bench_warden import (
    PG_URL_DEFAULT,
    PolicyHarness,
    governed_gateway,
    postgres_store,
    sqlite_store,
)
from .peers.ruleset import make_calls, make_rules


def _short(path: str) -> str:
    for marker in ("/src/", "/site-packages/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return Path(path).name if path.startswith("/") else path


def _rows(stats: pstats.Stats, n: int) -> list[dict[str, Any]]:
    out = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (path, line, func), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        out.append(
            {
                "function": f"{_short(path)}:{line}({func})" if line else func,
                "cum_us": cumtime / n * 1e6,
                "own_us": tottime / n * 1e6,
                "calls_per_op": ncalls / n,
            }
        )
    return out


def _timed_loop(call_once: Any, n: int) -> float:
    """Mean µs of ``n`` unprofiled iterations (gc disabled)."""
    gc.collect()
    gc.disable()
    try:
        t0 = perf_counter_ns()
        for _ in range(n):
            call_once()
        return (perf_counter_ns() - t0) / n / 1000.0
    finally:
        gc.enable()


def profile_policy(n_rules: int, n: int) -> tuple[pstats.Stats, float]:
    calls = make_calls()
    harness = PolicyHarness(make_rules(n_rules), calls)
    it = iter(range(10**12))

    def once() -> None:
        tool, args = calls[next(it) % len(calls)]
        harness.decide(tool, args)

    for _ in range(2_000):
        once()
    mean = _timed_loop(once, n)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        once()
    prof.disable()
    return pstats.Stats(prof), mean


def profile_governed(
    kind: str, n_rules: int, n: int, pg_url: str | None = None
) -> tuple[pstats.Stats, float]:
    tool_name = {"read": "noop", "write": "noop_write"}[kind]
    with sqlite_store() if pg_url is None else postgres_store(pg_url) as url:
        gw = governed_gateway(n_rules, url)
        try:

            async def body() -> tuple[pstats.Stats, float]:
                async with gw.run(tenant="bench", agent="bench-agent", task="profile") as run:
                    x = 0
                    for _ in range(300):
                        x += 1
                        await run.call(tool_name, {"x": x})
                    gw.flush()
                    gc.collect()
                    gc.disable()
                    try:
                        t0 = perf_counter_ns()
                        for _ in range(n):
                            x += 1
                            await run.call(tool_name, {"x": x})
                        gw.flush()
                        mean = (perf_counter_ns() - t0) / n / 1000.0
                        prof = cProfile.Profile()
                        prof.enable()
                        for _ in range(n):
                            x += 1
                            await run.call(tool_name, {"x": x})
                        gw.flush()
                        prof.disable()
                    finally:
                        gc.enable()
                    return pstats.Stats(prof), mean

            return asyncio.run(body())
        finally:
            gw.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("what", choices=("read", "write", "policy"))
    p.add_argument("--calls", type=int, default=None, help="profiled operations")
    p.add_argument("--rules", type=int, default=100)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--filter", default="", help="only functions whose name contains this")
    p.add_argument(
        "--postgres",
        nargs="?",
        const=PG_URL_DEFAULT,
        default=None,
        metavar="URL",
        help=f"ledger on a throwaway PostgreSQL database (default server {PG_URL_DEFAULT})",
    )
    ns = p.parse_args(argv)
    n = ns.calls or {"read": 5_000, "write": 1_000, "policy": 50_000}[ns.what]
    if ns.what == "policy":
        stats, mean = profile_policy(ns.rules, n)
        unit = "decision"
    else:
        stats, mean = profile_governed(ns.what, ns.rules, n, ns.postgres)
        unit = "governed call"
    rows = _rows(stats, n)
    profiled = max((r["cum_us"] for r in rows), default=0.0)
    print(
        f"{ns.what}, {ns.rules} rules, {n} operations: unprofiled mean {mean:.1f} µs per {unit}; "
        f"under cProfile {profiled:.1f} µs (x{profiled / mean:.1f})."
    )
    rows = [r for r in rows if ns.filter in r["function"]]
    for title, key in (("cumulative", "cum_us"), ("own time", "own_us")):
        print(f"\ntop {ns.top} by {title} (µs per {unit}, profiled)")
        print(f"{'cum µs':>9} {'own µs':>9} {'calls':>7}  function")
        for r in sorted(rows, key=lambda r: r[key], reverse=True)[: ns.top]:
            print(
                f"{r['cum_us']:9.1f} {r['own_us']:9.1f} {r['calls_per_op']:7.2f}  {r['function']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
