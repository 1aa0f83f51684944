"""Write the τ²-retail suite's cases: each task's gold conversation, and every violation
the generators make from it, as eval cases (JSONL).

    python -m examples.tau2_retail.evals.build [--data DIR] [--out FILE]

Without ``--data`` it writes ``cases.jsonl`` next to this file from the bundled subset
(what the committed file holds; ``tests/test_tau2_suite.py`` checks it is current). A
case's expectations come from the tools alone: the database after applying the calls
directly, without Warden, is the state the governed run must leave.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from examples.tau2_retail.data import Action, Dataset, load  # noqa: E402
from examples.tau2_retail.harness import apply_directly, conversation, owner_of  # noqa: E402
from examples.tau2_retail.store import TABLES, RetailState  # noqa: E402
from examples.tau2_retail.violations import Violation, generate  # noqa: E402

__all__ = ["FAST_TASKS", "cases", "main"]

HERE = Path(__file__).parent
#: tasks whose cases are tagged ``fast``: their violations cover every rule
FAST_TASKS = frozenset({"74", "100", "105"})


def _changes(state: RetailState, before: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``state.changes.<table>.updated``: per touched record, the fields that differ from
    ``before`` (the records as they were before the calls), with their new values."""
    out: dict[str, Any] = {}
    for table in TABLES:
        updated: dict[str, Any] = {}
        for key in sorted(state.touched()[table]):
            now = state.get(table, key) or {}
            old = before[table].get(key) or {}
            fields = {k: v for k, v in now.items() if old.get(k) != v}
            if fields:
                updated[key] = fields
        if updated:
            out[table] = {"updated": updated}
    return out


def _user(state: RetailState, actions: list[Action]) -> str | None:
    return next((u for u in (owner_of(state, a) for a in actions) if u), None)


def _step(action: Action, *, confirm: bool = True, refused: bool = False) -> dict[str, Any]:
    step: dict[str, Any] = {"tool": action.name, "args": action.arguments, "confirm": confirm}
    if refused:
        step["store_refuses"] = True
    return step


def _gold(dataset: Dataset, task_id: str, actions: list[Action]) -> dict[str, Any]:
    state = dataset.state()
    user = _user(state, actions)
    before = copy.deepcopy(state.snapshot())
    errors = apply_directly(state, actions)
    return {
        "id": f"gold-{task_id}",
        "description": f"τ² task {task_id}: the gold actions are let through and leave "
        "the database as the tools alone do.",
        "task_type": "customer_service",
        "input": {
            "customer": user,
            "steps": [
                _step(a, refused=e is not None) for a, e in zip(actions, errors, strict=True)
            ],
        },
        "expect": {"state": {"changes": _changes(state, before)}},
        "tags": ["gold", *(["fast"] if task_id in FAST_TASKS else [])],
    }


def _violation(dataset: Dataset, v: Violation, case_id: str) -> dict[str, Any]:
    state = dataset.state()
    fixtures: dict[str, Any] = {}
    if v.fixture is not None:
        # The harness changes the database after the prefix; a case states it as a patch
        # applied before it (the generators' changes do not touch what the prefix uses).
        v.fixture(state)
        fixtures = {t: dict(state.changes()[t]) for t in TABLES if state.changes()[t]}
    before = copy.deepcopy(state.snapshot())
    apply_directly(state, v.prefix)
    call = v.call
    return {
        "id": case_id,
        "description": f"τ² task {v.task}: {v.kind} — {call.name} must be refused by {v.rule}.",
        "task_type": "customer_service",
        "input": {
            "customer": _user(dataset.state(), [*v.prefix, call]),
            "steps": [*(_step(a) for a in v.prefix), _step(call, confirm=False)],
        },
        "fixtures": fixtures,
        "expect": {
            "state": {"changes": _changes(state, before)},
            "decisions": [
                {"tool": call.name, "args": call.arguments, "effect": "deny", "rule": v.rule}
            ],
        },
        "tags": ["violation", v.rule, *(["fast"] if v.task in FAST_TASKS else [])],
    }


def cases(dataset: Dataset) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for task in dataset.tasks:
        fixture = dataset.state()
        yield _gold(dataset, task.id, conversation(task, fixture))
        for v in generate(task, fixture):
            case_id, n = v.id, 2
            while case_id in seen:
                case_id, n = f"{v.id}.{n}", n + 1
            seen.add(case_id)
            yield _violation(dataset, v, case_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="τ²-bench retail data (default: the bundled subset)")
    parser.add_argument("--out", type=Path, default=HERE / "cases.jsonl")
    args = parser.parse_args(argv)
    lines = [json.dumps(c, sort_keys=True, ensure_ascii=False) for c in cases(load(args.data))]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} cases written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
