"""The tables that record what the ledger also records, checked against the events.

A rewrite after the last checkpoint can re-chain a stream consistently, but it must then
also rewrite the rows that mirror it: the runs row (its tenant, its answered steps, whether
it finished), the approvals it asked for, the idempotency records of its writes. Whatever
one of those says that the events do not bear out is reported as ``missing`` (or ``moved``
for a tenant that differs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from warden.ledger._verify import Problem
from warden.store import Store
from warden.store._tables import approvals, idempotency, runs

# An action has its outcome once one of these names it.
OUTCOMES = frozenset({"executed", "failed", "denied", "drafted", "reconciled"})
_PARSED = OUTCOMES | {"action_requested", "intent", "approval_requested"}


@dataclass
class RunEvents:
    tenant: str
    started: bool = False
    finished: bool = False
    requested: set[str] = field(default_factory=set)  # action ids
    intents: dict[str, str | None] = field(default_factory=dict)  # action id -> key
    outcomes: dict[str, str] = field(default_factory=dict)  # action id -> last outcome type
    approvals: set[str] = field(default_factory=set)


@dataclass
class RunFacts:
    """What the events say about each run, gathered while the chains are verified."""

    runs: dict[str, RunEvents] = field(default_factory=dict)

    def observe(self, row: Mapping[Any, Any]) -> None:
        run_id = row["run_id"]
        if run_id is None:
            return
        kind = str(row["type"])
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = RunEvents(str(row["tenant"]))
        if kind == "run_started":
            run.started = True
        elif kind == "run_finished":
            run.finished = True
        elif kind in _PARSED:
            payload = row["payload"]
            data = json.loads(payload) if isinstance(payload, str) else payload
            if not isinstance(data, dict):
                return
            action = str(data.get("action_id"))
            if kind == "action_requested":
                run.requested.add(action)
            elif kind == "intent":
                key = data.get("idempotency_key")
                run.intents[action] = None if key is None else str(key)
            elif kind == "approval_requested":
                run.approvals.add(str(data.get("approval_id")))
            else:
                run.outcomes[action] = kind


def cross_check_tables(
    store: Store, facts: RunFacts, *, tenant: str | None, archived: frozenset[str] = frozenset()
) -> list[Problem]:
    """``archived``: streams (run ids) cut by a signed archive: their rows are not checked
    against the events left in the store (a finished run archived whole has none)."""
    problems = [
        p for p in _cross_check(store, facts, tenant=tenant) if p.stream not in archived
    ]
    return problems


def _cross_check(store: Store, facts: RunFacts, *, tenant: str | None) -> list[Problem]:
    problems: list[Problem] = []
    events = facts.runs
    with store.read() as conn:
        q = select(runs.c.run_id, runs.c.tenant, runs.c.steps, runs.c.status)
        if tenant is not None:
            q = q.where(runs.c.tenant == tenant)
        seen: set[str] = set()
        for row in conn.execute(q):
            seen.add(row.run_id)
            problems += _check_run(row.run_id, row.tenant, row.steps, row.status, events)
        # Runs recorded on the ledger (under this tenant) whose row says otherwise.
        unseen = [r for r, ev in events.items() if r not in seen and ev.started]
        for i in range(0, len(unseen), 500):
            chunk = unseen[i : i + 500]
            found = {
                r.run_id: r
                for r in conn.execute(
                    select(runs.c.run_id, runs.c.tenant, runs.c.steps, runs.c.status).where(
                        runs.c.run_id.in_(chunk)
                    )
                )
            }
            for run_id in chunk:
                other = found.get(run_id)
                if other is None:
                    problems.append(
                        Problem(
                            run_id,
                            None,
                            None,
                            "missing",
                            "the ledger records this run; the runs table has no row for it",
                        )
                    )
                else:
                    problems += _check_run(
                        other.run_id, other.tenant, other.steps, other.status, events
                    )
        q2 = select(approvals.c.approval_id, approvals.c.run_id, approvals.c.tenant)
        if tenant is not None:
            q2 = q2.where(approvals.c.tenant == tenant)
        for apr in conn.execute(q2):
            run = events.get(apr.run_id)
            if run is None or apr.approval_id not in run.approvals:
                problems.append(
                    Problem(
                        apr.run_id,
                        None,
                        None,
                        "missing",
                        f"approval {apr.approval_id} is in the approvals table; the run's "
                        "events never requested it",
                    )
                )
            elif run.tenant != apr.tenant:
                problems.append(
                    Problem(
                        apr.run_id,
                        None,
                        None,
                        "moved",
                        f"approval {apr.approval_id} says tenant {apr.tenant}; the run's "
                        f"events say {run.tenant}",
                    )
                )
        q3 = select(
            idempotency.c.tenant,
            idempotency.c.key,
            idempotency.c.run_id,
            idempotency.c.action_id,
            idempotency.c.state,
        )
        if tenant is not None:
            q3 = q3.where(idempotency.c.tenant == tenant)
        for key in conn.execute(q3):
            run = events.get(key.run_id)
            if run is None or key.action_id not in run.intents:
                problems.append(
                    Problem(
                        key.run_id,
                        None,
                        None,
                        "missing",
                        f"the idempotency record of action {key.action_id} ({key.state}) has "
                        "no intent event",
                    )
                )
            elif key.state == "done" and key.action_id not in run.outcomes:
                problems.append(
                    Problem(
                        key.run_id,
                        None,
                        None,
                        "missing",
                        f"the idempotency record says action {key.action_id} is done; its "
                        "outcome event is missing",
                    )
                )
    return problems


def _check_run(
    run_id: str, tenant: str, steps: int, status: str, events: Mapping[str, RunEvents]
) -> list[Problem]:
    run = events.get(run_id)
    if run is None:
        return [
            Problem(
                run_id,
                None,
                None,
                "missing",
                f"the runs table has this run (tenant {tenant}, {status}, {steps} steps); "
                "the ledger has none of its events",
            )
        ]
    problems: list[Problem] = []
    if run.tenant != tenant:
        problems.append(
            Problem(
                run_id,
                None,
                None,
                "moved",
                f"the runs table says tenant {tenant}; the run's events say {run.tenant}",
            )
        )
    if steps > len(run.requested):
        problems.append(
            Problem(
                run_id,
                None,
                None,
                "missing",
                f"the runs table counts {steps} answered steps; the ledger records "
                f"{len(run.requested)} action_requested events",
            )
        )
    if status != "running" and not run.finished:
        problems.append(
            Problem(
                run_id,
                None,
                None,
                "missing",
                f"the run is {status} in the runs table; its run_finished event is missing",
            )
        )
    return problems
