"""What the console's pages show, computed from the API's answers (no store access here).

Pure functions: a run's timeline from its ledger events, the evidence of an approval
arranged for reading, edited arguments read from a form and checked against the tool's
input schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from warden.tools import SchemaViolation
from warden.tools._schema import Validator

#: batch decisions are offered for approvals of one rule at or under this risk
LOW_RISK = 0.5


@dataclass
class Step:
    """One governed call of a run, as its ledger events tell it."""

    action_id: str
    step: int
    tool: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    proposed_by: str | None = None
    #: why the agent said it proposed the call (its own words, as the ledger holds them)
    rationale: str | None = None
    at: str = ""
    decision: dict[str, Any] | None = None
    facts: dict[str, Any] | None = None
    outcome: str = "requested"  # executed / denied / failed / pending / drafted / ...
    detail: str = ""
    attempts: int = 0
    ms: float | None = None
    cost_usd: Decimal | None = None
    result: Any = None
    approvals: list[dict[str, Any]] = field(default_factory=list)
    resumed: int = 0
    model: str | None = None
    explanation: dict[str, Any] | None = None
    explain_error: str | None = None

    @property
    def untrusted(self) -> list[str]:
        provenance = (self.decision or {}).get("provenance") or {}
        return list(provenance.get("untrusted_args", []))


@dataclass
class Timeline:
    steps: list[Step]
    started: dict[str, Any] | None
    finished: dict[str, Any] | None
    cost_usd: Decimal
    other: list[dict[str, Any]]


def _step_no(action_id: str) -> int:
    tail = action_id.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _usd(text: Any) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(str(text))
    except InvalidOperation:
        return None


def timeline(events: list[dict[str, Any]]) -> Timeline:
    """Group a run's events (``EventOut`` dicts, in ledger order) by call."""
    steps: dict[str, Step] = {}
    started = finished = None
    other: list[dict[str, Any]] = []
    total = Decimal(0)

    def step(action_id: str) -> Step:
        found = steps.get(action_id)
        if found is None:
            found = steps[action_id] = Step(action_id, _step_no(action_id))
        return found

    for event in events:
        kind, p = event["type"], event["payload"]
        action_id = p.get("action_id")
        if kind == "run_started":
            started = {**p, "at": event["ts"]}
        elif kind == "run_finished":
            finished = {**p, "at": event["ts"]}
        elif action_id is None:
            other.append(event)
        elif kind == "action_requested":
            s = step(action_id)
            s.tool, s.args, s.at = p.get("tool", ""), p.get("args") or {}, event["ts"]
            s.proposed_by = p.get("proposed_by")
            stated = p.get("rationale")
            s.rationale = stated if isinstance(stated, str) else None
        elif kind == "action_resumed":
            step(action_id).resumed += 1
        elif kind == "facts":
            step(action_id).facts = p.get("facts")
        elif kind == "decision":
            step(action_id).decision = p
        elif kind == "executed":
            s = step(action_id)
            s.outcome, s.attempts, s.ms, s.result = "executed", p.get("attempts", 0), p.get("ms"), p.get("result")
            cost = _usd(p.get("cost_usd"))
            if cost is not None:
                s.cost_usd = (s.cost_usd or Decimal(0)) + cost
                total += cost
        elif kind == "usage":
            s = step(action_id)
            s.model = p.get("model")
            cost = _usd(p.get("cost_usd"))
            if cost is not None:
                s.cost_usd = (s.cost_usd or Decimal(0)) + cost
                total += cost
        elif kind in ("denied", "failed", "drafted"):
            s = step(action_id)
            s.outcome = kind
            s.detail = "; ".join(p.get("reasons") or []) or p.get("detail") or p.get("kind", "")
            s.attempts = p.get("attempts", s.attempts)
        elif kind.startswith("approval_"):
            s = step(action_id)
            s.approvals.append({"event": kind.removeprefix("approval_"), "at": event["ts"], **p})
            if kind == "approval_requested" and s.outcome == "requested":
                s.outcome = "pending"
        else:
            other.append(event)
    ordered = sorted(steps.values(), key=lambda s: s.step)
    return Timeline(ordered, started, finished, total, other)


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One line of the queue, formatted once in Python (the page may hold 500 of them)."""

    approval_id: str
    tool: str
    args: list[tuple[str, str, bool]]  # name, shown value, from untrusted text
    rules: str
    risk: str
    risky: bool
    role: str
    tenant: str
    deadline: str
    due: str
    overdue: bool
    escalation_level: int
    batchable: bool
    suggested: str  # approve / reject / edit, or "" when there is none
    suggestion: str  # its summary


def queue_rows(items: list[Any], batchable: set[str], now: datetime) -> list[QueueRow]:
    """``ApprovalOut`` items as queue rows."""
    rows = []
    for a in items:
        untrusted = untrusted_args(a.evidence)
        s = a.suggestion
        rows.append(
            QueueRow(
                approval_id=a.approval_id,
                tool=a.tool,
                args=[(k, compact(v), k in untrusted) for k, v in a.args.items()],
                rules=", ".join(a.rules),
                risk=f"{a.risk:.2f}",
                risky=a.risk > LOW_RISK,
                role=a.role,
                tenant=a.tenant,
                deadline=a.deadline.isoformat(),
                due=countdown(a.deadline, now),
                overdue=a.deadline < now,
                escalation_level=a.escalation_level,
                batchable=a.approval_id in batchable,
                suggested="" if s is None else s.action,
                suggestion="" if s is None else s.summary,
            )
        )
    return rows


def untrusted_args(evidence: dict[str, Any]) -> set[str]:
    provenance = evidence.get("provenance") or {}
    return set(provenance.get("untrusted_args") or [])


def origins(evidence: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    provenance = evidence.get("provenance") or {}
    found: dict[str, list[dict[str, Any]]] = provenance.get("origins") or {}
    return found


def countdown(deadline: datetime, now: datetime | None = None) -> str:
    """``12m 05s`` left, or ``overdue 3m 10s``."""
    now = now or datetime.now(UTC)
    left = int((deadline - now).total_seconds())
    sign = "" if left >= 0 else "overdue "
    left = abs(left)
    hours, rest = divmod(left, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"
    return sign + text


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def compact(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


# -- edited arguments ------------------------------------------------------------------------

ARG_PREFIX = "arg."


def edited_args(form: dict[str, list[str]], original: dict[str, Any]) -> dict[str, Any]:
    """The arguments of an edit form (fields ``arg.<name>``), typed like the originals: a
    field whose original was not a string is read as JSON when it parses."""
    args: dict[str, Any] = {}
    for name, old in original.items():
        values = form.get(ARG_PREFIX + name)
        if values is None:
            args[name] = old  # not on the form: unchanged
            continue
        raw = values[-1]
        if isinstance(old, str):
            args[name] = raw
            continue
        try:
            args[name] = json.loads(raw)
        except ValueError:
            # Kept as typed: the schema check says what was expected, next to the field.
            args[name] = raw
    return args


def schema_errors(validator: Validator | None, args: dict[str, Any]) -> dict[str, str]:
    """Field -> message for ``args`` against the tool's input schema (empty when valid);
    a whole-object error is reported under ``""``."""
    if validator is None:
        return {}
    try:
        validator.validate(args)
    except SchemaViolation as exc:
        out: dict[str, str] = {}
        for err in exc.errors:
            name = err.path.split(".", 1)[0].split("[", 1)[0]
            key = name if name in args else ""
            out[key] = (out[key] + "; " if key in out else "") + err.message
        return out
    return {}


__all__ = [
    "ARG_PREFIX",
    "LOW_RISK",
    "QueueRow",
    "Step",
    "Timeline",
    "compact",
    "countdown",
    "edited_args",
    "origins",
    "pretty",
    "queue_rows",
    "schema_errors",
    "timeline",
    "untrusted_args",
]
