"""The state a governed call carries through the pipeline, and the run it belongs to."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from warden.approvals import ApprovalRecord
from warden.policy import Decision, ProvenanceTracker
from warden.secrets import Redactor
from warden.spec import Tier
from warden.tools import ToolDef

if TYPE_CHECKING:
    from warden.pipeline._models import ModelCall


@dataclass(slots=True, weakref_slot=True)
class RunState:
    """What the gateway remembers about one open run, in the process that runs it."""

    run_id: str
    tenant: str
    workflow: str
    agent: str
    scopes: frozenset[str]
    tier: Tier
    task: str
    task_type: str | None = None
    allowed_tools: frozenset[str] | None = None
    end_user: str | None = None
    opened_by: str | None = None
    steps: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    last_tool: str | None = None
    last_args: Any = None
    repeats: int = 0
    stopped: str | None = None
    provenance: ProvenanceTracker = field(default_factory=ProvenanceTracker)
    principal: dict[str, Any] = field(default_factory=dict)
    #: the highest risk of the run's decisions so far (``run.risk`` in rules)
    risk: float = 0.0
    #: what the run's model calls cost so far, in nano-dollars, and their tokens
    cost_nusd: int = 0
    tokens: int = 0

    def __post_init__(self) -> None:
        # The user's own request: values it names are not tainted by untrusted text.
        self.provenance.observe_trusted_request(self.task)

    @property
    def requested_by(self) -> str:
        """Who an approval is requested by: the key that opened the run, else the agent."""
        return self.opened_by or self.agent

    def counters(self) -> dict[str, Any]:
        """What must survive between calls when a run's calls reach different processes
        (the step count is kept apart, in ``runs.steps``: see ``pipeline._runs``)."""
        found: dict[str, Any] = {
            "retries": dict(self.retries),
            "counts": dict(self.counts),
            "last_tool": self.last_tool,
            "last_args": self.last_args,
            "repeats": self.repeats,
            "stopped": self.stopped,
            "provenance": self.provenance.snapshot(),
            "risk": self.risk,
            "cost_nusd": self.cost_nusd,
            "tokens": self.tokens,
        }
        # kept here, sealed, as given: the run's row holds them tokenized (docs/pii.md)
        if self.end_user is not None:
            found["end_user"] = self.end_user
        if self.opened_by is not None:
            found["opened_by"] = self.opened_by
        return found

    def restore(self, data: dict[str, Any]) -> None:
        self.retries = dict(data.get("retries", {}))
        self.counts = dict(data.get("counts", {}))
        self.last_tool = data.get("last_tool")
        self.last_args = data.get("last_args")
        self.repeats = int(data.get("repeats", 0))
        self.stopped = data.get("stopped")
        self.risk = float(data.get("risk", 0.0))
        self.cost_nusd = int(data.get("cost_nusd", 0))
        self.tokens = int(data.get("tokens", 0))
        self.provenance = ProvenanceTracker.restore(data.get("provenance", {}))
        self.provenance.observe_trusted_request(self.task)
        # the raw identities (the run's row holds them tokenized): rules decide on these
        self.end_user = data.get("end_user", self.end_user)
        self.opened_by = data.get("opened_by", self.opened_by)

    def context(self) -> dict[str, Any]:
        """The ``run`` value rules see."""
        return {
            "id": self.run_id,
            "step": self.steps,
            "tier": self.tier.value,
            "task_type": self.task_type,
            "counts": self.counts,
            "end_user": self.end_user,
            "opened_by": self.opened_by,
            "risk": self.risk,
            "cost_usd": self.cost_nusd / 1e9,
            "tokens": self.tokens,
        }


@dataclass(slots=True)
class Call:
    """One proposed action on its way through the stages.

    A resumed approval is a call too (``approval`` set): it enters the pipeline at the top,
    with the approved (possibly edited) arguments, and the approval stage lets it through.
    """

    run: RunState
    tool_name: str
    raw_args: Any
    action_id: str
    given_key: str | None = None
    wait_s: float | None = None
    #: who proposed it (an API key's identity); the run's opener when not given
    actor: str | None = None
    #: the id of the API key that sent the call (``principal.key``); None in process
    api_key: str | None = None
    #: how sure the agent says it is that this call is right (0..1), recorded on
    #: ``action_requested`` for calibration (``warden eval``); None when not reported
    confidence: float | None = None
    #: why the agent says it proposes this call, in its own words (untrusted free text, at
    #: most ``RATIONALE_MAX`` characters): recorded on ``action_requested`` and kept with an
    #: approval for the human; no rule reads it
    rationale: str | None = None
    approval: ApprovalRecord | None = None
    tool: ToolDef | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    decision: Decision | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    windows: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    effect_possible: bool = False
    output: Any = None
    #: a write's verified result as canonical JSON (VerifyStage), what its key settles with
    result_json: str | None = None
    #: minted credential values of this call, scrubbed from its output and errors
    redactor: Redactor | None = None
    started: float = 0.0
    #: a model call: what the model stages made of it (see ``pipeline.stages._model``)
    model: ModelCall | None = None
    #: what the agent says about a model call, for routes (``hints.confidence``, ...)
    hints: dict[str, Any] = field(default_factory=dict)
    #: the route that picked the model (``auto: rule 2 (the agent is unsure) -> large``)
    routed: str | None = None
    #: a tool with a ``cost:``: what the call cost (USD), or why it could not be read
    cost: Decimal | None = None
    cost_problem: str | None = None
    #: stage entry/exit marks while a ``StageObserver`` watches (see ``Pipeline.observe``)
    marks: list[tuple[str | None, int]] | None = None

    @property
    def proposer(self) -> str:
        return self.actor or self.run.requested_by
