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


@dataclass(frozen=True, slots=True)
class Failed:
    """The call was attempted or malformed and did not complete."""

    kind: FailureKind
    detail: str
    action_id: str
    errors: tuple[FieldError, ...] = field(default=())


Result = Allowed | Drafted | Denied | Pending | Failed
