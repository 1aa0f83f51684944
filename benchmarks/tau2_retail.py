"""τ²-bench retail, the full set: 114 tasks' gold actions and every generated violation
through a Warden gateway (examples/tau2_retail; the test suite runs a subset).

    python -m benchmarks.tau2_retail --data DIR [--store URL] [--ablation] [--json FILE]

``--data`` (or ``TAU2_RETAIL_DATA``) is a directory with τ²'s ``db.json`` and
``tasks.json``; without one the bundled subset runs, and the report says so.

Figures: false positives (gold actions denied that the store accepts), gold actions the
store refuses too, state success (the database after the governed replay equal to the one
the tools alone leave, record by record and by τ²'s whole-database hash), block rate per
rule, and the time per governed gold call (median over tasks of a task's replay time per
action, approvals included). ``--ablation`` removes each rule in turn and replays its
violations: a rule whose violations are still blocked without it is not what blocks them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from examples.tau2_retail.check import run_suite
from examples.tau2_retail.data import BUNDLED, data_dir, load
from examples.tau2_retail.harness import SPEC, Harness, apply_directly, conversation
from examples.tau2_retail.violations import RULES, generate


async def _hashes(dataset: Any, store: str) -> tuple[int, float]:
    """Tasks whose whole database hashes equal after governed and direct replay."""
    harness = Harness(dataset, store=store)
    equal = 0
    started = time.perf_counter()
    try:
        for task in dataset.tasks:
            await harness.gold(task)
            expected = dataset.state()
            apply_directly(expected, conversation(task, expected))
            equal += harness.state.digest() == expected.digest()
    finally:
        harness.close()
    return equal, time.perf_counter() - started


async def _per_call_ms(dataset: Any, store: str) -> list[float]:
    harness = Harness(dataset, store=store)
    samples = []
    try:
        for task in dataset.tasks:
            started = time.perf_counter()
            report = await harness.gold(task)
            if report.outcomes:
                samples.append(1000 * (time.perf_counter() - started) / len(report.outcomes))
    finally:
        harness.close()
    return samples


async def _ablation(dataset: Any, tmp: Path) -> dict[str, dict[str, int]]:
    fixture = dataset.state()
    cases = [v for task in dataset.tasks for v in generate(task, fixture)]
    raw = yaml.safe_load(SPEC.read_text())
    out: dict[str, dict[str, int]] = {}
    for rule in RULES:
        mine = [v for v in cases if v.rule == rule]
        spec = tmp / f"without_{rule}.yaml"
        spec.write_text(
            yaml.safe_dump(
                {**raw, "policies": [p for p in raw["policies"] if p["name"] != rule]},
                sort_keys=False,
            )
        )
        harness = Harness(dataset, store=f"sqlite:///{tmp / f'{rule}.db'}", spec=spec)
        still = 0
        try:
            for case in mine:
                _, outcome = await harness.violation(case)
                # Refused anyway: by another deny rule (the confirmation alone does not count).
                still += outcome.status == "denied"
        finally:
            harness.close()
        out[rule] = {"violations": len(mine), "denied_without_rule": still}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tau2_retail", description=__doc__)
    parser.add_argument("--data", help="τ² retail data directory (default: $TAU2_RETAIL_DATA)")
    parser.add_argument("--store", help="store URL (default: a temporary SQLite file)")
    parser.add_argument(
        "--ablation", action="store_true", help="replay each rule's violations without it"
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)
    where = data_dir(args.data)
    if where == BUNDLED:
        print(f"note: no --data or $TAU2_RETAIL_DATA: running the bundled subset ({where})")
    dataset = load(where)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = args.store or f"sqlite:///{tmp / 'suite.db'}"
        report = asyncio.run(run_suite(dataset, store=store))
        print(report.render())
        figures: dict[str, Any] = report.to_json()
        equal, secs = asyncio.run(_hashes(dataset, f"sqlite:///{tmp / 'hash.db'}"))
        print(
            f"\nWhole-database hash equal after governed and direct replay: {equal}/{len(dataset.tasks)} ({secs:.1f} s)"
        )
        figures["hash_equal"] = equal
        samples = asyncio.run(_per_call_ms(dataset, f"sqlite:///{tmp / 'timing.db'}"))
        median = statistics.median(samples)
        print(
            f"Governed gold call, median over tasks of ms per action: {median:.1f} ms (SQLite store)"
        )
        figures["ms_per_gold_action_median"] = median
        if args.ablation:
            ablation = asyncio.run(_ablation(dataset, tmp))
            figures["ablation"] = ablation
            print("\nAblation: each rule removed, its violations replayed")
            print(f"  {'rule':<42} {'denied anyway':>14}")
            for rule, row in ablation.items():
                print(f"  {rule:<42} {row['denied_without_rule']:>6}/{row['violations']:<6}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0 if report.passed and equal == len(dataset.tasks) else 1


if __name__ == "__main__":
    sys.exit(main())
