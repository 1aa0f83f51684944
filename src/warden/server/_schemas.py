"""Wire shapes of the /v1 API: separate request and response models."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from warden.approvals import ApprovalRecord, Suggestion
from warden.auth import KeyInfo
from warden.events import RATIONALE_MAX
from warden.pipeline import Switch
from warden.pipeline._replicas import Replica
from warden.results import Result, to_wire

#: identifiers (tenants, agents, workflows, roles, ids): no spaces, no control characters
ID_PATTERN = r"^[A-Za-z0-9_.:@\-]+$"
Name = Field(min_length=1, max_length=120, pattern=ID_PATTERN)


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it at the boundary rather than fail in the store.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
RunId = Annotated[str, Path(min_length=1, max_length=40, pattern=ID_PATTERN)]
ApprovalId = Annotated[str, Path(min_length=1, max_length=40, pattern=ID_PATTERN)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


VersionName = Annotated[str, Field(min_length=1, max_length=64)]
VersionValue = Annotated[str, Field(max_length=200)]


class RunCreate(_In):
    workflow: str = Field(min_length=1, max_length=120, pattern=ID_PATTERN)
    agent: str = Name
    task: str = Field(min_length=1, max_length=10_000)
    tenant: str | None = Field(
        default=None, min_length=1, max_length=120, pattern=r"^[A-Za-z0-9_.:@\-]+$"
    )
    task_type: str | None = Field(default=None, max_length=120)
    end_user: str | None = Field(default=None, min_length=1, max_length=200)
    #: what the agent reports it runs: ``{"prompt": "v3", "model": "...", "retrieval": "..."}``
    versions: dict[VersionName, VersionValue] | None = Field(default=None, max_length=20)


class RunFinish(_In):
    outcome: Literal["completed", "failed", "abandoned", "escalated"] = "completed"


class ActionCreate(_In):
    tool: Text = Field(min_length=1, max_length=200)
    args: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: Text | None = Field(default=None, min_length=1, max_length=128)
    wait_s: float = Field(
        default=0.0, ge=0.0, le=60.0, description="wait this long for an approval"
    )
    confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, description="how sure the agent is the call is right"
    )
    rationale: Text | None = Field(
        default=None,
        max_length=RATIONALE_MAX,
        description="why the agent proposes the call, in its own words: recorded on "
        "`action_requested` and shown to the approver as the agent's words; no rule reads it",
    )


class ApprovalDecision(_In):
    decision: Literal["approve", "reject"]
    rationale: Text = Field(min_length=1, max_length=4000)
    args: dict[str, Any] | None = Field(default=None, description="edited arguments (approve only)")
    on_behalf_of: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="bridge keys only: the person this decision is made for",
    )


class SwitchSet(_In):
    scope: Literal["global", "tenant", "workflow", "tool"]
    target: str | None = Field(default=None, min_length=1, max_length=120, pattern=ID_PATTERN)
    active: bool
    reason: Text = Field(min_length=1, max_length=2000)


class RunOut(BaseModel):
    run_id: str
    tenant: str
    workflow: str
    workflow_version: str
    spec_fingerprint: str
    agent: str
    task: str
    task_type: str | None
    end_user: str | None
    tier: str
    status: str
    outcome: str | None
    steps: int = Field(description="Calls proposed so far (each took one step)")
    started_at: datetime
    finished_at: datetime | None


class RunList(BaseModel):
    items: list[RunOut]
    next: str | None = Field(
        default=None, description="Cursor of the next page (pass as `after`); null on the last"
    )


class FieldErrorOut(BaseModel):
    path: str
    expected: str
    got: str
    message: str


class ActionResult(BaseModel):
    status: Literal["allowed", "denied", "pending", "failed", "drafted"]
    action_id: str
    result: Any = None
    replayed: bool = False
    kind: str | None = None
    reasons: list[str] = Field(default_factory=list)
    rules: list[str] = Field(default_factory=list)
    detail: str | None = None
    errors: list[FieldErrorOut] = Field(default_factory=list)
    approval_id: str | None = None
    role: str | None = None
    deadline: datetime | None = None
    tool: str | None = None
    args: dict[str, Any] | None = None

    @classmethod
    def of(cls, result: Result) -> ActionResult:
        return cls.model_validate(to_wire(result))


class CitationOut(TypedDict):
    """One reason of a suggestion and its source."""

    #: ``rule``, ``fact`` (a fact the decision looked up), ``provenance`` (an argument
    #: copied from untrusted text) or ``history`` (earlier decisions)
    source: Literal["rule", "fact", "provenance", "history"]
    #: the rule's name, the fact's or argument's path, an earlier approval's id, or
    #: ``workflow / rules`` for the history as a whole
    ref: str
    text: str


class EarlierOut(TypedDict):
    approval_id: str
    decision: Literal["approved", "edited", "rejected"]
    decided_at: datetime


class HistoryOut(TypedDict):
    """How this tenant's approvers decided the same workflow and rules lately."""

    days: int
    approved: int
    #: approved with edited arguments
    edited: int
    rejected: int
    #: the most recent (at most three)
    recent: list[EarlierOut]


class SuggestionOut(BaseModel):
    """A suggested decision, for the human who decides (docs/console.md)."""

    label: Literal["suggestion"] = Field(
        default="suggestion",
        description="always `suggestion`: Warden does not decide; a human does",
    )
    action: Literal["approve", "reject", "edit"]
    summary: str
    reasons: list[CitationOut] = Field(
        description="each reason with its source: a rule, a fact, an argument's provenance or "
        "earlier decisions"
    )
    history: HistoryOut
    args: dict[str, Any] | None = Field(
        default=None, description="`edit`: the arguments it suggests changing, with their values"
    )

    @classmethod
    def of(cls, s: Suggestion) -> SuggestionOut:
        # Built without validation: the values are Warden's own, and a queue page builds
        # 500 of these (measured: validated models and their garbage doubled its time).
        h = s.history
        return cls.model_construct(
            action=s.action,
            summary=s.summary,
            reasons=[{"source": c.source, "ref": c.ref, "text": c.text} for c in s.reasons],
            history={
                "days": h.days,
                "approved": h.approved,
                "edited": h.edited,
                "rejected": h.rejected,
                "recent": [
                    {"approval_id": e.approval_id, "decision": e.decision, "decided_at": e.decided_at}
                    for e in h.recent
                ],
            },
            args=s.args,
        )


class ApprovalOut(BaseModel):
    approval_id: str
    tenant: str
    run_id: str
    action_id: str
    workflow: str
    tool: str
    args: dict[str, Any]
    reasons: list[str]
    rules: list[str]
    evidence: dict[str, Any]
    risk: float
    role: str
    sla_class: str | None = Field(description="The rule's SLA class; null: the default SLA")
    escalation_level: int
    requested_by: str
    state: str
    created_at: datetime
    deadline: datetime
    age_s: float
    decided_by: str | None
    decided_at: datetime | None
    rationale: str | None = Field(description="the approver's rationale for the decision")
    result: Any = None
    agent_rationale: str | None = Field(
        default=None,
        description="why the agent said it proposed the action, in its own words (untrusted "
        "text from the model; no rule read it)",
    )
    suggestion: SuggestionOut | None = Field(
        default=None,
        description="pending approvals: a suggested decision with its reasons and their "
        "sources; a suggestion only, the human decides",
    )

    @classmethod
    def of(
        cls, record: ApprovalRecord, now: datetime, suggestion: Suggestion | None = None
    ) -> ApprovalOut:
        data = {k: getattr(record, k) for k in _RECORD_FIELDS}
        evidence = record.evidence
        stated = evidence.get("agent_rationale") if isinstance(evidence, dict) else None
        if stated is not None:
            data["evidence"] = {k: v for k, v in evidence.items() if k != "agent_rationale"}
        return cls(
            **data,
            age_s=round((now - record.created_at).total_seconds(), 3),
            agent_rationale=stated if isinstance(stated, str) else None,
            suggestion=None if suggestion is None else SuggestionOut.of(suggestion),
        )


#: the fields ApprovalOut copies from an ApprovalRecord as they are
_RECORD_FIELDS = tuple(
    k for k in ApprovalOut.model_fields if k not in ("age_s", "agent_rationale", "suggestion")
)


class ApprovalList(BaseModel):
    items: list[ApprovalOut]
    next: str | None = Field(
        default=None, description="Cursor of the next page (pass as `after`); null on the last"
    )


class ReplicaRef(BaseModel):
    replica_id: str
    host: str
    pid: int


class SwitchOut(BaseModel):
    scope: str
    target: str
    active: bool
    set_by: str
    reason: str
    set_at: datetime
    seen_by: list[ReplicaRef] = Field(
        default_factory=list,
        description="Live replicas whose last read of the switches began after this change "
        "(GET /v1/switches only)",
    )
    waiting_for: list[ReplicaRef] = Field(
        default_factory=list,
        description="Live replicas that have not read this change yet (GET /v1/switches only)",
    )

    @classmethod
    def of(cls, s: Switch, live: Sequence[Replica] = ()) -> SwitchOut:
        seen = [r for r in live if r.has_seen(s.set_at)]
        return cls(
            scope=s.scope.value,
            target=s.target,
            active=s.active,
            set_by=s.set_by,
            reason=s.reason,
            set_at=s.set_at,
            seen_by=[ReplicaRef(replica_id=r.replica_id, host=r.host, pid=r.pid) for r in seen],
            waiting_for=[
                ReplicaRef(replica_id=r.replica_id, host=r.host, pid=r.pid)
                for r in live
                if r not in seen
            ],
        )


class ReplicaOut(BaseModel):
    replica_id: str
    kind: str = Field(description="`serve` (a `warden serve` worker) or `sdk` (a gateway)")
    host: str
    pid: int
    version: str
    started_at: datetime
    last_seen_at: datetime
    switches_read_at: datetime | None = Field(
        description="When its last read of the kill switches began (null before the first)"
    )
    live: bool = Field(description="Seen within the server's `replica_live_s`")

    @classmethod
    def of(cls, r: Replica, live: bool) -> ReplicaOut:
        return cls(
            replica_id=r.replica_id,
            kind=r.kind,
            host=r.host,
            pid=r.pid,
            version=r.version,
            started_at=r.started_at,
            last_seen_at=r.last_seen_at,
            switches_read_at=r.switches_read_at,
            live=live,
        )


class ReplicaList(BaseModel):
    items: list[ReplicaOut]
    live_s: float = Field(description="The window within which a replica counts as live")
    next: str | None = Field(
        default=None, description="Cursor of the next page (pass as `after`); null on the last"
    )


class SwitchList(BaseModel):
    items: list[SwitchOut]
    next: str | None = Field(
        default=None, description="Cursor of the next page (pass as `after`); null on the last"
    )


class EventOut(BaseModel):
    id: int
    stream: str
    seq: int
    tenant: str
    run_id: str | None
    ts: str
    type: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class EventList(BaseModel):
    items: list[EventOut]
    next: str | None = Field(
        default=None, description="Cursor of the next page (pass as `after`); null on the last"
    )


class ProblemOut(BaseModel):
    kind: str
    stream: str
    seq: int | None
    event_id: int | None
    detail: str


class VerifyOut(BaseModel):
    ok: bool
    events: int
    streams: int
    problems: list[ProblemOut]


class WorkflowOut(BaseModel):
    name: str
    version: str
    description: str
    owner: str
    tier: str
    fingerprint: str
    policy_fingerprint: str
    tools: list[str]
    rules: int


class ToolOut(BaseModel):
    name: str
    description: str
    effect: str = Field(description="read, write, delete, money, external_message, ...")
    idempotent: bool
    kind: str = Field(description="tool, or model (a declared model called as a tool)")
    input_schema: dict[str, Any] = Field(
        description="JSON Schema of the arguments, as the server validates them"
    )
    output_schema: dict[str, Any] | None = None


class ToolList(BaseModel):
    workflow: str
    items: list[ToolOut]


class WorkflowList(BaseModel):
    items: list[WorkflowOut]
    next: str | None = Field(
        default=None, description="Cursor of the next page (pass as `after`); null on the last"
    )


class KeyOut(BaseModel):
    key_id: str
    name: str
    role: str
    tenant: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, k: KeyInfo) -> KeyOut:
        return cls(
            key_id=k.key_id,
            name=k.name,
            role=k.role.value,
            tenant=k.tenant,
            created_at=k.created_at,
            expires_at=k.expires_at,
            revoked_at=k.revoked_at,
        )


class Health(BaseModel):
    status: Literal["ok"]
    detail: str | None = None
