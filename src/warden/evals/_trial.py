"""What one run of a case did, read back from its typed ledger events: every action with
its decision and outcome, what the run cost, and how the environment's state changed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from warden import events as ev
from warden.evals._env import CollectionDiff
from warden.spec import MODEL_TOOL_PREFIX, EffectClass

#: policy decisions that are not an allow: the call was refused or held for a human
HELD = frozenset({"deny", "require_approval", "escalate"})


@dataclass
class Action:
    """One proposed call of the run, as the ledger tells it."""

    action_id: str
    tool: str
    args: Any
    #: the tool's side-effect class; None for a tool the workflow does not have
    effect_class: EffectClass | None
    #: the policy's decision (allow, deny, require_approval, escalate); None when the call
    #: was stopped before the policy (scope, schema, caps, switches) or never reached it
    decision: str | None = None
    rules: tuple[str, ...] = ()
    #: requested, executed, replayed (an earlier call's result returned again), drafted,
    #: denied, failed or pending
    outcome: str = "requested"
    #: the refusal's or failure's kind (``policy_block``, ``scope_denied``, ...)
    kind: str | None = None
    cost_usd: Decimal = Decimal(0)
    #: how sure the agent said it was that the call is right (0..1), when it said
    confidence: float | None = None

    @property
    def is_model(self) -> bool:
        return self.tool.startswith(MODEL_TOOL_PREFIX)

    @property
    def executed(self) -> bool:
        return self.outcome == "executed"

    @property
    def unsafe_write_attempt(self) -> bool:
        """A call of a tool that changes the world (any effect but ``read``; model calls
        excluded) that Warden did not let run by itself: the policy denied it, sent it for
        approval or escalated it, or a stage before the policy refused it."""
        if self.effect_class is None or not self.effect_class.is_write or self.is_model:
            return False
        if self.decision is not None:
            return self.decision in HELD
        return self.outcome == "denied"


@dataclass
class Trial:
    """One run of one case: the observations every scorer reads."""

    case_id: str
    attempt: int
    run_id: str
    actions: list[Action] = field(default_factory=list)
    #: the state changes, by collection (empty when the environment has no state)
    diff: Mapping[str, CollectionDiff] = field(default_factory=dict)
    #: what the agent returned
    output: Any = None
    #: the agent's exception, when it raised one
    error: str | None = None
    latency_ms: float = 0.0
    cost_usd: Decimal = Decimal(0)
    #: the task type's ``success_when`` verdict, when it declares one
    success: bool | None = None
    #: the typed events of the run, in order
    events: list[ev.Event] = field(default_factory=list)
    #: a confirmation run of a case that failed
    confirmation: bool = False
    #: how the ledger records a call's arguments (PII as keyed tokens, docs/pii.md); the
    #: runner sets it, so that a case's expected arguments compare with what was recorded
    record_args: Callable[[Any], Any] | None = None

    def as_recorded(self, args: Any) -> Any:
        """``args`` (a case's expectation) as the ledger would have recorded them."""
        return args if self.record_args is None or args is None else self.record_args(args)

    @property
    def unsafe_writes(self) -> int:
        return sum(a.unsafe_write_attempt for a in self.actions)


def read_actions(
    trial: Trial, events: Iterable[ev.Event], effects: Mapping[str, EffectClass]
) -> None:
    """Fill ``trial``'s actions, cost and success verdict from the run's events."""
    by_id: dict[str, Action] = {}
    for event in events:
        trial.events.append(event)
        match event:
            case ev.ActionRequested(
                action_id=action_id, tool=tool, args=args, confidence=confidence
            ):
                new = Action(action_id, tool, args, effects.get(tool), confidence=confidence)
                by_id[action_id] = new
                trial.actions.append(new)
            case ev.DecisionMade(action_id=action_id, effect=effect, rules=rules, matched=m):
                if (action := by_id.get(action_id)) is not None:
                    action.decision = effect
                    action.rules = tuple(dict.fromkeys([*rules, *m]))
            case ev.Executed(action_id=action_id, cost_usd=cost, replayed=replayed):
                if (action := by_id.get(action_id)) is not None:
                    # A repeat of an earlier call's idempotency key: its first result,
                    # no second effect.
                    action.outcome, action.kind = ("replayed" if replayed else "executed"), None
                    if cost is not None:
                        action.cost_usd += Decimal(cost)
                if cost is not None:
                    trial.cost_usd += Decimal(cost)
            case ev.ModelUsage(action_id=action_id, cost_usd=cost):
                if cost is not None:
                    trial.cost_usd += Decimal(cost)
                    if (action := by_id.get(action_id)) is not None:
                        action.cost_usd += Decimal(cost)
            case ev.Denied(action_id=action_id, kind=kind, rules=rules):
                if (action := by_id.get(action_id)) is not None:
                    action.outcome, action.kind = "denied", kind
                    if rules and not action.rules:
                        action.rules = tuple(rules)
            case ev.Failed(action_id=action_id, kind=kind):
                if (action := by_id.get(action_id)) is not None:
                    action.outcome, action.kind = "failed", kind
            case ev.ApprovalRequested(action_id=action_id):
                if (action := by_id.get(action_id)) is not None:
                    action.outcome = "pending"
            case ev.Drafted(action_id=action_id):
                if (action := by_id.get(action_id)) is not None:
                    action.outcome = "drafted"
            case ev.RunFinished(success=success):
                trial.success = success
            case _:
                pass
