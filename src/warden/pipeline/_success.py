"""Whether a run succeeded, judged from what its ledger recorded rather than from the
outcome its agent reports.

A task type may declare ``success_when``, a CEL condition over ``run`` (the run and the
outcome it finished with) and ``actions`` (every action of the run, as the ledger recorded
it). ``Run.finish`` evaluates it and records the verdict on the ``run_finished`` event,
where cost reports (``warden.economics``) read it. A check that fails to evaluate is a
failure with its error recorded: success is never granted by an error (fail closed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from warden.errors import CelEvalError
from warden.policy.cel import CompiledExpression
from warden.store import Store
from warden.store._tables import ledger_events

# The kinds that say what became of an action; the others (decisions, facts, usage) do not.
_ACTION_KINDS = (
    "action_requested",
    "approval_requested",
    "approval_decided",
    "intent",
    "executed",
    "drafted",
    "denied",
    "failed",
    "reconciled",
)
#: How long ``read_complete_actions`` waits for events other processes have not committed.
WAIT_S = 1.0
_STATUS = {
    "approval_requested": "pending",
    "executed": "executed",
    "drafted": "drafted",
    "denied": "denied",
    "failed": "failed",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """A success check's answer; ``error`` says why a check that could not be evaluated
    counted as a failure."""

    success: bool
    error: str | None = None


def recorded_actions(events: Iterable[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The ``actions`` a success check sees, in the order they were requested, from the
    run's events ``(type, payload)`` in ledger order.

    Each is ``{tool, step, args, status, result}``: ``args`` as executed (an approver's
    edit or the write's intent replaces what was proposed); ``status`` is the last thing
    recorded of it: ``requested`` (nothing else), ``pending`` (waiting for approval),
    ``executed``, ``drafted``, ``denied`` or ``failed``; ``result`` is what the tool
    returned (null unless executed). An action settled by an operator (``warden ledger
    settle``) counts as what it was settled as.
    """
    actions: dict[str, dict[str, Any]] = {}
    for kind, payload in events:
        action_id = payload.get("action_id")
        if not isinstance(action_id, str):
            continue
        if kind == "action_requested":
            actions[action_id] = {
                "tool": payload.get("tool"),
                "step": payload.get("step"),
                "args": payload.get("args"),
                "status": "requested",
                "result": None,
            }
            continue
        action = actions.get(action_id)
        if action is None:  # an event of an action requested before this record began
            continue
        if kind in ("approval_decided", "intent") and payload.get("args") is not None:
            action["args"] = payload["args"]
        if kind == "reconciled":
            done = payload.get("settled_as") == "done"
            action["status"] = "executed" if done else "failed"
            action["result"] = payload.get("result") if done else None
        elif kind in _STATUS:
            action["status"] = _STATUS[kind]
            if kind == "executed":
                action["result"] = payload.get("result")
    return list(actions.values())


def read_actions(store: Store, run_id: str) -> list[dict[str, Any]]:
    """``recorded_actions`` of a run, read from its ledger stream (the stream is the run
    id: ``pipeline._sinks.LedgerSink``), which the store indexes."""
    query = (
        select(ledger_events.c.type, ledger_events.c.payload)
        .where(ledger_events.c.stream == run_id, ledger_events.c.type.in_(_ACTION_KINDS))
        .order_by(ledger_events.c.seq)
    )
    with store.read() as conn:
        rows = conn.execute(query).all()
    return recorded_actions((kind, json.loads(payload)) for kind, payload in rows)


def read_complete_actions(
    store: Store, run_id: str, steps: int, *, wait_s: float = WAIT_S
) -> list[dict[str, Any]]:
    """``read_actions``, once every step of the run has its request and its outcome on the
    ledger, or after ``wait_s``.

    Each step records one ``action_requested`` and one outcome; the caller has written
    what it buffered itself, but another replica that served one of the run's calls
    commits its events in batches, after answering (up to the writer's ``max_age_s``, 0.2 s
    by default). A record still short of that when the wait is over (a call in flight as
    the run finishes, a process that died mid-call) is judged as it is.
    """
    deadline = time.monotonic() + wait_s
    while True:
        actions = read_actions(store, run_id)
        complete = len(actions) >= steps and all(a["status"] != "requested" for a in actions)
        if complete or time.monotonic() >= deadline:
            return actions
        time.sleep(0.05)


def judge(
    check: CompiledExpression, run: Mapping[str, Any], actions: list[dict[str, Any]]
) -> Verdict:
    """Evaluate a success check; anything but ``true`` is a failure."""
    try:
        value = check.evaluate({"run": run, "actions": actions})
    except CelEvalError as exc:
        return Verdict(False, f"success_when could not be evaluated: {exc}")
    if not isinstance(value, bool):
        return Verdict(False, f"success_when gave {type(value).__name__}, not a bool")
    return Verdict(value)


__all__ = [
    "WAIT_S",
    "Verdict",
    "judge",
    "read_actions",
    "read_complete_actions",
    "recorded_actions",
]
