"""Shared timing harness: one ``perf_counter_ns`` pair around each single evaluation.

Calls are cycled round-robin (sample ``k`` uses call ``k % len(calls)``), so the
samples of any subset of calls (e.g. the calls that match no rule) can be picked
out afterwards.  The garbage collector is collected once and then disabled while
sampling, so a collection pause is not charged to whichever sample it lands in.
"""

from __future__ import annotations

import asyncio
import gc
import math
import statistics
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter_ns
from typing import Any

Call = tuple[str, dict[str, Any]]

DEFAULT_WARMUP = 2_000


def percentile(sorted_ns: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_ns:
        return float("nan")
    rank = max(1, math.ceil(q / 100.0 * len(sorted_ns)))
    return float(sorted_ns[rank - 1])


def summarize(
    samples_ns: Sequence[int], n_calls: int, subset: Sequence[int] | None = None
) -> dict[str, Any]:
    """Median / p99 in µs of all samples, plus the median of the ``subset`` call indices."""
    ordered = sorted(samples_ns)
    out: dict[str, Any] = {
        "median_us": statistics.median(ordered) / 1000.0,
        "p99_us": percentile(ordered, 99.0) / 1000.0,
        "mean_us": statistics.fmean(ordered) / 1000.0,
        "samples": len(ordered),
    }
    if subset:
        chosen = set(subset)
        picked = [s for k, s in enumerate(samples_ns) if (k % n_calls) in chosen]
        out["median_us_no_match"] = statistics.median(picked) / 1000.0 if picked else None
        out["samples_no_match"] = len(picked)
    else:
        out["median_us_no_match"] = None
        out["samples_no_match"] = 0
    return out


def time_sync(
    fn: Callable[[str, dict[str, Any]], Any],
    calls: Sequence[Call],
    repeat: int,
    warmup: int = DEFAULT_WARMUP,
) -> list[int]:
    """``repeat`` timed single calls of ``fn(tool, args)`` after ``warmup`` untimed ones."""
    n = len(calls)
    for k in range(warmup):
        tool, args = calls[k % n]
        fn(tool, args)
    samples = [0] * repeat
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for k in range(repeat):
            tool, args = calls[k % n]
            t0 = perf_counter_ns()
            fn(tool, args)
            samples[k] = perf_counter_ns() - t0
    finally:
        if was_enabled:
            gc.enable()
    return samples


def time_run_until_complete(
    make_coro: Callable[[str, dict[str, Any]], Awaitable[Any]],
    calls: Sequence[Call],
    repeat: int,
    warmup: int = DEFAULT_WARMUP,
) -> list[int]:
    """AGT's own kernel-benchmark method: ``loop.run_until_complete(coro)`` per sample.

    The timed region includes creating the coroutine and one event-loop round trip,
    exactly as ``bench_kernel._timer`` in AGT does.
    """
    n = len(calls)
    loop = asyncio.new_event_loop()
    try:
        for k in range(warmup):
            tool, args = calls[k % n]
            loop.run_until_complete(make_coro(tool, args))
        samples = [0] * repeat
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for k in range(repeat):
                tool, args = calls[k % n]
                t0 = perf_counter_ns()
                loop.run_until_complete(make_coro(tool, args))
                samples[k] = perf_counter_ns() - t0
        finally:
            if was_enabled:
                gc.enable()
    finally:
        loop.close()
    return samples


def time_awaited_in_loop(
    make_coro: Callable[[str, dict[str, Any]], Awaitable[Any]],
    calls: Sequence[Call],
    repeat: int,
    warmup: int = DEFAULT_WARMUP,
) -> list[int]:
    """Each sample is one ``await make_coro(...)`` inside an already running loop.

    This is how a gateway that already runs in asyncio would pay for the call; it
    leaves out the per-call ``run_until_complete`` round trip.
    """
    n = len(calls)

    async def body() -> list[int]:
        for k in range(warmup):
            tool, args = calls[k % n]
            await make_coro(tool, args)
        samples = [0] * repeat
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for k in range(repeat):
                tool, args = calls[k % n]
                t0 = perf_counter_ns()
                await make_coro(tool, args)
                samples[k] = perf_counter_ns() - t0
        finally:
            if was_enabled:
                gc.enable()
        return samples

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(body())
    finally:
        loop.close()


def timer_overhead_ns(repeat: int = 20_000) -> float:
    """Median cost of an empty timed region (perf_counter_ns pair + a no-op call)."""

    def noop(tool: str, args: dict[str, Any]) -> None:
        return None

    samples = time_sync(noop, [("t", {})], repeat, warmup=1_000)
    return float(statistics.median(samples))
