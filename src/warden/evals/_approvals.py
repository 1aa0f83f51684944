"""``warden eval import-approvals``: decided approvals as labelled cases for the bank.

Each approval a human decided becomes one case in the scenario format
(docs/evals.md): the call as the agent proposed it, as a ``steps`` input (what
``warden.testing.ScriptedAgent`` and the demo agent replay), and the expected decision is
what the human decided:

- ``approved``: the call should be allowed (``effect: allow``);
- ``rejected``: it should be denied (``effect: deny``);
- ``edited``: the call as proposed should be denied, and the call with the approver's
  arguments, a second step, allowed.

The policy's own decision at the time, the approver, the role and the rationale are kept
in the description, and the facts the policy looked up in ``input.recorded_facts``; the
state the call acted on is not on the ledger, so ``fixtures`` are left for the author.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from warden.errors import UsageError
from warden.ledger import iter_events
from warden.store import Store
from warden.store._tables import ledger_events, utc_text

__all__ = ["approval_cases", "write_cases"]

_EXPECTED = {"approved": "allow", "rejected": "deny"}


def approval_cases(
    store: Store, since: datetime, *, tenant: str | None = None
) -> list[dict[str, Any]]:
    """The cases of every approval decided at or after ``since``, oldest first."""
    if since.tzinfo is None:
        raise UsageError("--since needs a timezone-aware time (e.g. ...Z)")
    query = (
        select(ledger_events.c.run_id, ledger_events.c.payload)
        .where(
            ledger_events.c.type == "approval_decided",
            ledger_events.c.ts >= utc_text(since),
        )
        .order_by(ledger_events.c.ts, ledger_events.c.id)
    )
    if tenant is not None:
        query = query.where(ledger_events.c.tenant == tenant)
    with store.read() as conn:
        decided = [(r[0], json.loads(r[1])) for r in conn.execute(query)]
    by_run: dict[str, dict[str, Any]] = {}
    cases: list[dict[str, Any]] = []
    for run_id, decision in decided:
        if run_id is None:
            continue
        if run_id not in by_run:
            by_run[run_id] = _run_facts(store, run_id)
        run = by_run[run_id]
        action = run["actions"].get(decision["action_id"])
        if action is None:
            continue  # its request is not on the ledger: nothing to label
        cases.append(_case(decision, action, run))
    return cases


def _run_facts(store: Store, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = {"task_type": None, "task": None, "actions": {}}
    for row in iter_events(store, run_id=run_id):
        p = row.payload
        if row.type == "run_started":
            run["task_type"], run["task"] = p.get("task_type"), p.get("task")
        elif row.type == "action_requested":
            run["actions"][p["action_id"]] = {"tool": p["tool"], "args": p.get("args") or {}}
        elif row.type in ("facts", "decision") and p.get("action_id") in run["actions"]:
            run["actions"][p["action_id"]].setdefault(row.type, p)
    return run


def _case(decision: dict[str, Any], action: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    tool, args = action["tool"], action["args"]
    verdict = decision["decision"]
    policy = action.get("decision") or {}
    steps = [{"tool": tool, "args": args}]
    if verdict == "edited":
        edited = decision.get("args") or {}
        steps.append({"tool": tool, "args": edited})
        expected = [
            {"tool": tool, "args": args, "effect": "deny"},
            {"tool": tool, "args": edited, "effect": "allow"},
        ]
    else:
        expected = [{"tool": tool, "args": args, "effect": _EXPECTED[verdict]}]
    who = decision.get("approver", "?")
    role = decision.get("role")
    description = (
        f"{tool} {verdict} by {who}{f' ({role})' if role else ''}: "
        f"{decision.get('rationale', '')}; the policy decided "
        f"{policy.get('effect', '?')} {policy.get('rules', [])}"
    )
    case: dict[str, Any] = {
        "id": f"approval-{decision['approval_id']}",
        "description": description,
    }
    if run["task_type"] is not None:
        case["task_type"] = run["task_type"]
    case["input"] = {"steps": steps}
    facts = (action.get("facts") or {}).get("facts")
    if facts:
        case["input"]["recorded_facts"] = facts
    case["expect"] = {"decisions": expected}
    case["tags"] = ["approval", verdict]
    return case


def write_cases(cases: list[dict[str, Any]], out: Path) -> None:
    """Write ``cases`` as a YAML list (what a suite's ``include:`` loads)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cases, sort_keys=False, allow_unicode=True, width=100)
    out.write_text(
        "# Decided approvals as labelled cases (warden eval import-approvals): the expected\n"
        "# decision is what the human decided. Add the fixtures each case's calls act on.\n"
        + text,
        encoding="utf-8",
    )
