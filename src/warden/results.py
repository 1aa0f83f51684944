"""What a governed call returns: a typed outcome, never an exception for a policy result.

``match`` on the result::

    match await run.call("issue_refund", {...}):
        case Allowed(result=r): ...
        case Pending(approval_id=a): ...
        case Denied(reasons=rs): ...
        case Drafted(): ...
        case Failed(kind=k, detail=d): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from warden.tools import FieldError


class FailureKind(StrEnum):
    """Every way a call can end without its effect; recorded on the ledger."""

    TOOL_ERROR = "tool_error"
    TIMEOUT = "timeout"
    SCHEMA_ERROR = "schema_error"
    OUTPUT_SCHEMA_ERROR = "output_schema_error"
    POLICY_BLOCK = "policy_block"
    SCOPE_DENIED = "scope_denied"
    APPROVAL_REJECTED = "approval_rejected"
    APPROVAL_TIMEOUT = "approval_timeout"
    APPROVAL_LIMIT = "approval_limit"
    APPROVAL_CANCELLED = "approval_cancelled"
    UNKNOWN_TOOL = "unknown_tool"
    CIRCUIT_OPEN = "circuit_open"
    KILLED = "killed"
    RUNAWAY = "runaway"
    MAX_STEPS = "max_steps"
    RETRIES_EXHAUSTED = "retries_exhausted"
    FACT_ERROR = "fact_error"
    CREDENTIAL_ERROR = "credential_error"
    IN_PROGRESS = "in_progress"
    OUTCOME_UNKNOWN = "outcome_unknown"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    #: a model call the budgets cannot pay for (the reasons say what is left)
    BUDGET_EXCEEDED = "budget_exceeded"
    #: the model upstream (every target of its chain) failed
    UPSTREAM_ERROR = "upstream_error"


@dataclass(frozen=True, slots=True)
class Allowed:
    """The tool ran (or a repeat of an idempotency key returned the first result)."""

    result: Any
    action_id: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Drafted:
    """Draft tier: the write was recorded as what would have been sent, not executed."""

    action_id: str
    tool: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Denied:
    """Warden refused the call before it ran."""

    kind: FailureKind
    reasons: tuple[str, ...]
    action_id: str
    rules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pending:
    """The call waits for a human decision."""

    approval_id: str
    action_id: str
    role: str
    deadline: datetime
    reasons: tuple[str, ...] = ()
    #: the rules that asked for approval (``default:...`` or ``risk:review_at`` when no
    #: rule did), as ``Denied.rules``
    rules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Failed:
    """The call was attempted or malformed and did not complete."""

    kind: FailureKind
    detail: str
    action_id: str
    errors: tuple[FieldError, ...] = field(default=())


Result = Allowed | Drafted | Denied | Pending | Failed


def to_wire(result: Result) -> dict[str, Any]:
    """The JSON form of a result (the API's ``ActionResult``, the remote SDK's input): the
    one place a result is converted for the wire."""
    match result:
        case Allowed():
            return {
                "status": "allowed",
                "action_id": result.action_id,
                "result": result.result,
                "replayed": result.replayed,
            }
        case Denied():
            return {
                "status": "denied",
                "action_id": result.action_id,
                "kind": result.kind.value,
                "reasons": list(result.reasons),
                "rules": list(result.rules),
            }
        case Pending():
            return {
                "status": "pending",
                "action_id": result.action_id,
                "approval_id": result.approval_id,
                "role": result.role,
                "deadline": result.deadline.isoformat(),
                "reasons": list(result.reasons),
                "rules": list(result.rules),
            }
        case Failed():
            return {
                "status": "failed",
                "action_id": result.action_id,
                "kind": result.kind.value,
                "detail": result.detail,
                "errors": [e.to_json() for e in result.errors],
            }
        case Drafted():
            return {
                "status": "drafted",
                "action_id": result.action_id,
                "tool": result.tool,
                "args": result.args,
            }


def from_wire(data: dict[str, Any]) -> Result:
    """The result ``to_wire`` made (``ValueError`` or ``KeyError`` for anything else)."""
    status, action_id = data["status"], data["action_id"]
    if status == "allowed":
        return Allowed(data.get("result"), action_id, replayed=bool(data.get("replayed")))
    if status == "denied":
        return Denied(
            FailureKind(data["kind"]),
            tuple(data.get("reasons") or ()),
            action_id,
            tuple(data.get("rules") or ()),
        )
    if status == "pending":
        deadline = data["deadline"]
        return Pending(
            data["approval_id"],
            action_id,
            data["role"],
            deadline if isinstance(deadline, datetime) else datetime.fromisoformat(deadline),
            tuple(data.get("reasons") or ()),
            tuple(data.get("rules") or ()),
        )
    if status == "failed":
        errors = tuple(FieldError(**e) for e in data.get("errors") or ())
        return Failed(FailureKind(data["kind"]), data.get("detail") or "", action_id, errors)
    if status == "drafted":
        return Drafted(action_id, data["tool"], data.get("args") or {})
    raise ValueError(f"unknown action status {status!r}")
