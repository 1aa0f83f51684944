"""Run the τ²-retail suite and print its report.

    python -m examples.tau2_retail.check [--data DIR] [--tasks 0,5,70] [--store URL] [--json]

Without ``--data`` (or ``TAU2_RETAIL_DATA``) it runs on the bundled subset. The exit status
is 0 when the suite passes — no false positive, every task's database as expected, every
rule blocking at least 95 % of its violations — 1 when it does not, 2 when the data or the
spec cannot be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from examples.tau2_retail.data import Dataset, load
from examples.tau2_retail.harness import SPEC, Harness, TaskReport, apply_directly
from examples.tau2_retail.violations import RULES, Violation, generate
from warden import WardenError

__all__ = ["BLOCK_TARGET", "RuleFigures", "SuiteReport", "main", "run_suite"]

#: the share of each rule's violations that must be blocked
BLOCK_TARGET = 0.95


@dataclass
class RuleFigures:
    rule: str
    total: int = 0
    blocked: int = 0
    #: blocked with no other rule denying too (the violation broke this rule alone)
    alone: int = 0
    missed: list[str] = field(default_factory=list)
    #: cases whose gold prefix did not replay (not counted)
    broken: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.blocked / self.total if self.total else None


@dataclass
class SuiteReport:
    data: str
    tasks: list[TaskReport] = field(default_factory=list)
    rules: dict[str, RuleFigures] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def gold_actions(self) -> int:
        return sum(len(t.outcomes) for t in self.tasks)

    @property
    def false_positives(self) -> list[tuple[str, Any]]:
        return [(t.task, o) for t in self.tasks for o in t.false_positives]

    @property
    def store_refused(self) -> list[tuple[str, Any, str]]:
        return [(t.task, o, d) for t in self.tasks for o, d in t.store_refused]

    @property
    def state_failures(self) -> list[TaskReport]:
        return [t for t in self.tasks if not t.state_ok]

    @property
    def violations(self) -> int:
        return sum(r.total for r in self.rules.values())

    @property
    def blocked(self) -> int:
        return sum(r.blocked for r in self.rules.values())

    @property
    def broken(self) -> list[str]:
        return [b for r in self.rules.values() for b in r.broken]

    @property
    def passed(self) -> bool:
        rates = [r.rate for r in self.rules.values() if r.rate is not None]
        return (
            not self.broken
            and not self.false_positives
            and not self.state_failures
            and all(rate >= BLOCK_TARGET for rate in rates)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "passed": self.passed,
            "tasks": len(self.tasks),
            "gold_actions": self.gold_actions,
            "false_positives": [
                {
                    "task": t,
                    "tool": o.action.name,
                    "rules": list(o.rules),
                    "reasons": list(o.reasons),
                }
                for t, o in self.false_positives
            ],
            "store_refused": [
                {"task": t, "tool": o.action.name, "rules": list(o.rules), "store": d}
                for t, o, d in self.store_refused
            ],
            "state_success": len(self.tasks) - len(self.state_failures),
            "state_failures": {t.task: t.state_diff for t in self.state_failures},
            "violations": self.violations,
            "broken_cases": self.broken,
            "blocked": self.blocked,
            "rules": {
                r.rule: {
                    "violations": r.total,
                    "blocked": r.blocked,
                    "alone": r.alone,
                    "rate": r.rate,
                    "missed": r.missed,
                }
                for r in self.rules.values()
            },
            "seconds": self.seconds,
        }

    def render(self) -> str:
        n = len(self.tasks)
        out = [
            f"τ²-bench retail through Warden — data: {self.data}",
            "",
            f"Gold replay: {n} tasks, {self.gold_actions} gold actions "
            f"({self.seconds.get('gold', 0.0):.1f} s)",
            f"  false positives (denied, the store accepts): {len(self.false_positives)}",
        ]
        for task, o in self.false_positives:
            out.append(
                f"    task {task} {o.action.name}: {', '.join(o.rules)} — {' '.join(o.reasons)}"
            )
        out.append(f"  denied gold actions the store refuses too: {len(self.store_refused)}")
        for task, o, store in self.store_refused:
            out.append(f"    task {task} {o.action.name}: {', '.join(o.rules)}; store: {store}")
        ok = n - len(self.state_failures)
        out.append(f"  state success (database equal to the direct application): {ok}/{n}")
        for t in self.state_failures:
            out.append(f"    task {t.task}: {', '.join(t.state_diff)}")
        if self.rules:
            out += [
                "",
                f"Violations: {self.blocked}/{self.violations} blocked "
                f"({self.seconds.get('violations', 0.0):.1f} s)",
                f"  {'rule':<42} {'blocked':>9} {'rate':>7} {'alone':>6}",
            ]
            for r in self.rules.values():
                rate = "—" if r.rate is None else f"{100 * r.rate:.1f}%"
                out.append(f"  {r.rule:<42} {r.blocked:>4}/{r.total:<4} {rate:>7} {r.alone:>6}")
                for miss in r.missed[:5]:
                    out.append(f"    missed: {miss}")
            if self.broken:
                out.append(
                    f"  cases whose gold prefix did not replay (not counted): {len(self.broken)}"
                )
                out += [f"    {b}" for b in self.broken[:10]]
        out += ["", "PASS" if self.passed else "FAIL"]
        return "\n".join(out)


async def run_suite(
    dataset: Dataset,
    *,
    store: str,
    spec: Path = SPEC,
    violations: bool = True,
) -> SuiteReport:
    """Gold replay, state diff and (``violations``) the generated violations."""
    report = SuiteReport(str(dataset.directory))
    harness = Harness(dataset, store=store, spec=spec)
    try:
        started = time.perf_counter()
        for task in dataset.tasks:
            report.tasks.append(await harness.gold(task))
        report.seconds["gold"] = time.perf_counter() - started
        if violations:
            started = time.perf_counter()
            fixture = dataset.state()
            cases = [v for task in dataset.tasks for v in generate(task, fixture)]
            report.seconds["generate"] = time.perf_counter() - started
            started = time.perf_counter()
            report.rules = {rule: RuleFigures(rule) for rule in RULES}
            for case in cases:
                await _score(
                    harness, case, report.rules.setdefault(case.rule, RuleFigures(case.rule))
                )
            report.seconds["violations"] = time.perf_counter() - started
    finally:
        harness.close()
    return report


async def _score(harness: Harness, case: Violation, figures: RuleFigures) -> None:
    prefix, outcome = await harness.violation(case)
    direct = apply_directly(harness.dataset.state(), case.prefix)
    # A gold action the store refuses too (task 64's exchange of a pending order) may be
    # refused in the prefix; any other refusal means the prefix did not replay as alone.
    stopped = [
        o
        for o, d in zip(prefix, direct, strict=True)
        if (o.blocked or o.status == "failed") and d is None
    ]
    if stopped:
        # The gold conversation did not replay as it does alone: the case tests nothing.
        figures.broken.append(
            f"{case.id}: prefix {stopped[0].action.name} {stopped[0].status} "
            f"({', '.join(stopped[0].rules)})"
        )
        return
    figures.total += 1
    if outcome.blocked and case.rule in outcome.rules:
        figures.blocked += 1
        if set(outcome.rules) == {case.rule}:
            figures.alone += 1
    else:
        rules = ", ".join(outcome.rules) or "no rule"
        figures.missed.append(f"{case.id} -> {outcome.status} ({rules})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.tau2_retail.check",
        description="Replay τ²-bench retail gold actions and generated violations through Warden.",
    )
    parser.add_argument(
        "--data",
        help="directory with db.json and tasks.json "
        "(default: $TAU2_RETAIL_DATA, else the bundled subset)",
    )
    parser.add_argument("--tasks", help="comma-separated task ids (default: all)")
    parser.add_argument("--store", help="Warden store URL (default: a temporary SQLite file)")
    parser.add_argument("--spec", type=Path, default=SPEC, help="workflow spec to check")
    parser.add_argument("--no-violations", action="store_true", help="gold replay only")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    task_ids = {t.strip() for t in args.tasks.split(",")} if args.tasks else None
    try:
        dataset = load(args.data, task_ids=task_ids)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot load the data: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or f"sqlite:///{Path(tmp) / 'warden.db'}"
        try:
            report = asyncio.run(
                run_suite(dataset, store=store, spec=args.spec, violations=not args.no_violations)
            )
        except WardenError as exc:
            print(f"error: {exc}".splitlines()[0], file=sys.stderr)
            return 2
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
