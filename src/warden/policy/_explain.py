"""Explaining a decision: every rule considered, whether it matched, and what it read.

``explain`` is pure: it takes a compiled ``Policy`` and an activation (the values rules
see) and evaluates each rule ``Policy.for_tool`` gives for the tool, and each context path
the rule references, by walking the activation. ``warden explain``, the
``GET /v1/runs/{id}/actions/{step}/explain`` route and ``warden policy test`` build on it.

``RecordedStep.from_events`` rebuilds the activation of one recorded step from its run's
ledger events (the arguments, the facts looked up, the window values and provenance the
decision recorded, the run's principal, tenant and run context), so a decision can be
recomputed and compared with what was recorded.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from warden.errors import CelError, NotFoundError, UsageError
from warden.events import ActionRequested, DecisionMade, FactsLookedUp, RunStarted
from warden.ledger import LedgerEvent, to_jsonable
from warden.policy._context import NO_MODEL
from warden.policy._engine import CompiledRule, Decision, Policy
from warden.spec import MODEL_TOOL_PREFIX, EffectClass, LoadedSpec, Tier

Outcome = Literal["true", "false", "error"]

#: ``provenance`` when no argument came from untrusted or sensitive output (the decision
#: event records provenance only when it says something).
CLEAN_PROVENANCE: dict[str, Any] = {
    "untrusted_args": [],
    "sources": {},
    "origins": {},
    "sensitive_args": [],
    "sensitive_sources": {},
    "sensitive_origins": {},
}


@dataclass(frozen=True, slots=True)
class PathValue:
    """One context path a rule references and its value in the activation."""

    path: tuple[str, ...]
    value: Any
    missing: bool

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def shown(self, limit: int | None = None) -> str:
        """``args.amount = 150.0``; ``facts.order.refunded = <missing>``."""
        if self.missing:
            return f"{self.dotted} = <missing>"
        text = json.dumps(to_jsonable(self.value), ensure_ascii=False, sort_keys=True)
        if limit is not None and len(text) > limit:
            text = text[: limit - 1] + "…"
        return f"{self.dotted} = {text}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.dotted,
            "missing": self.missing,
            "value": None if self.missing else to_jsonable(self.value),
        }


@dataclass(frozen=True, slots=True)
class RuleExplanation:
    """One rule considered for the tool: its condition's outcome and the values it read."""

    name: str
    effect: str
    when: str
    outcome: Outcome
    #: why the condition could not be evaluated (``outcome == "error"``)
    error: str | None
    values: tuple[PathValue, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "effect": self.effect,
            "when": self.when,
            "matched": self.outcome,
            "error": self.error,
            "values": [v.to_json() for v in self.values],
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision and how it came about."""

    tool: str
    effect_class: EffectClass
    tier: Tier
    rules: tuple[RuleExplanation, ...]
    decision: Decision

    @property
    def errors(self) -> tuple[RuleExplanation, ...]:
        return tuple(r for r in self.rules if r.outcome == "error")

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "effect_class": self.effect_class.value,
            "tier": self.tier.value,
            "rules": [r.to_json() for r in self.rules],
            "decision": self.decision.to_json(),
        }


_MISSING = object()


def lookup(activation: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in the activation, or ``_MISSING``: a field of a map is its
    key (as CEL selects it); anything else has no fields."""
    current: Any = activation
    for part in path:
        if not isinstance(current, Mapping):
            return _MISSING
        try:
            if part not in current:
                return _MISSING
            current = current[part]
        except CelError:  # a variable that could not be evaluated (the rule says why)
            return _MISSING
    return current


def explain_rule(rule: CompiledRule, activation: Mapping[str, Any]) -> RuleExplanation:
    outcome: Outcome
    error: str | None = None
    try:
        hit = rule.evaluate(activation)
    except CelError as exc:
        outcome, error = "error", str(exc)
    else:
        if hit is True:
            outcome = "true"
        elif hit is False:
            outcome = "false"
        else:
            outcome, error = "error", f"condition gave {type(hit).__name__}, not bool"
    values = []
    for path in sorted(rule.expr.references):
        found = lookup(activation, path)
        values.append(PathValue(path, None if found is _MISSING else found, found is _MISSING))
    return RuleExplanation(
        rule.name,
        "score" if rule.effect is None else rule.effect.value,
        rule.expr.source,
        outcome,
        error,
        tuple(values),
    )


def explain(
    policy: Policy,
    tool: str,
    effect_class: EffectClass,
    tier: Tier,
    activation: Mapping[str, Any],
) -> Explanation:
    """Every rule ``policy.for_tool(tool)`` gives, evaluated on ``activation``, with the
    value of each path it references, and the decision ``Policy.decide`` reaches."""
    tool_policy = policy.for_tool(tool)
    if tool_policy.variables and "variables" not in activation:
        # As Policy.decide does: evaluated as rules (and the values shown) first use them.
        activation = dict(activation)
        activation["variables"] = policy.variables_for(activation)
    rules = tuple(explain_rule(rule, activation) for rule in tool_policy.rules)
    decision = policy.decide(tool_policy, effect_class, tier, activation)
    return Explanation(tool, effect_class, tier, rules, decision)


# -- the tool context rules see, from a spec alone -----------------------------------------


def tool_context_from_spec(loaded: LoadedSpec, tool: str) -> tuple[dict[str, Any], EffectClass]:
    """The ``tool`` value rules see and the tool's effect class, from the spec's declaration
    (the implementation's values are not known here: a tool whose spec entry leaves out
    ``effect`` cannot be explained without its implementation)."""
    declared = loaded.spec.tools.get(tool)
    if declared is None:
        raise UsageError(
            f"tool {tool!r} is not declared in {loaded.file} "
            f"(declared: {', '.join(sorted(loaded.spec.tools)) or 'none'})"
        )
    if declared.effect is None:
        raise UsageError(
            f"tool {tool!r} has no 'effect' in {loaded.file}: declare it there "
            "(its implementation's effect is not known without the tools)"
        )
    effect = declared.effect
    idempotent = (
        declared.idempotent if declared.idempotent is not None else effect is EffectClass.READ
    )
    return (
        {
            "name": tool,
            "effect": effect.value,
            "scope": declared.scope,
            "idempotent": idempotent,
            "untrusted_output": bool(declared.untrusted_output),
            "kind": "model" if tool.removeprefix(MODEL_TOOL_PREFIX) in loaded.spec.models
            and tool.startswith(MODEL_TOOL_PREFIX) else "tool",
        },
        effect,
    )


# -- a recorded step --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedStep:
    """What the ledger holds about one step of a run, enough to rebuild its activation."""

    run_id: str
    step: int
    action_id: str
    workflow: str
    tenant: str
    tier: Tier
    tool: str
    args: Any
    principal: dict[str, Any]
    run: dict[str, Any]
    facts: dict[str, Any]
    window: dict[str, Any]
    provenance: dict[str, Any]
    #: the run's policy fingerprint when it started
    run_policy: str
    decision: DecisionMade

    @classmethod
    def from_events(cls, run_id: str, step: int, events: Iterable[LedgerEvent]) -> RecordedStep:
        """Raises ``NotFoundError`` naming what is missing: the run, the step, or (for a
        call stopped before the policy stage) its decision."""
        rows = list(events)
        started: RunStarted | None = None
        tenant = ""
        requested: ActionRequested | None = None
        counts: Counter[str] = Counter()
        for row in rows:
            event = row.event
            if isinstance(event, RunStarted):
                started, tenant = event, row.tenant
            elif isinstance(event, ActionRequested) and event.step <= step:
                counts[event.tool] += 1  # ``run.counts`` includes the call being decided
                if event.step == step:
                    requested = event
        facts: FactsLookedUp | None = None
        decision: DecisionMade | None = None
        stopped: str | None = None
        action_id = None if requested is None else requested.action_id
        for row in rows:
            if action_id is None or row.payload.get("action_id") != action_id:
                continue
            event = row.event
            if isinstance(event, FactsLookedUp):
                facts = facts or event
            elif isinstance(event, DecisionMade):
                decision = decision or event  # an approver's edit may record another one
            elif row.type in ("denied", "failed") and stopped is None:
                stopped = f"{row.type} ({row.payload.get('kind', '?')})"
        if started is None:
            raise NotFoundError(f"no run {run_id!r} (no run_started event on the ledger)")
        if requested is None:
            raise NotFoundError(f"run {run_id!r} has no step {step}")
        if decision is None:
            why = f": it was {stopped} before the policy stage" if stopped else ""
            raise NotFoundError(
                f"step {step} of run {run_id!r} ({requested.tool}) has no policy decision{why}"
            )
        return cls(
            run_id=run_id,
            step=step,
            action_id=requested.action_id,
            workflow=started.workflow,
            tenant=tenant,
            tier=Tier(started.tier),
            tool=requested.tool,
            args=requested.args,
            principal={"agent": started.agent, "scopes": list(started.scopes)},
            run={
                "id": run_id,
                "step": step,
                "tier": started.tier,
                "task_type": started.task_type,
                "counts": dict(counts),
            },
            facts=dict(facts.facts) if facts is not None else {},
            window=dict(decision.window or {}),
            provenance=dict(decision.provenance or CLEAN_PROVENANCE),
            run_policy=started.policy_fingerprint,
            decision=decision,
        )

    def activation(
        self,
        tool_context: Mapping[str, Any],
        args: Any | None = None,
        model: Mapping[str, Any] = NO_MODEL,
    ) -> dict[str, Any]:
        """The activation the policy stage built; ``args``: the validated arguments when
        the tool's schema is at hand (else the recorded ones); ``model``: the ``model``
        value of a model call."""
        return {
            "tool": dict(tool_context),
            "model": dict(model),
            "args": self.args if args is None else args,
            "principal": self.principal,
            "tenant": self.tenant,
            "run": self.run,
            "provenance": self.provenance,
            "window": self.window,
            "facts": self.facts,
        }


@dataclass(frozen=True, slots=True)
class StepExplanation:
    """A recorded step explained again, and whether the recomputed decision is the one
    that was recorded."""

    step: RecordedStep
    explanation: Explanation
    #: the fingerprint of the rules explaining it now
    policy: str

    @property
    def spec_changed(self) -> bool:
        recorded = self.step.decision.policy or self.step.run_policy
        return recorded != self.policy

    @property
    def differences(self) -> tuple[str, ...]:
        """How the recomputed decision differs from the recorded one (empty: the same)."""
        now, then = self.explanation.decision, self.step.decision
        found = []
        if now.effect.value != then.effect:
            found.append(f"effect: recorded {then.effect}, now {now.effect.value}")
        if list(now.rules) != list(then.rules):
            found.append(f"rules: recorded {list(then.rules)}, now {list(now.rules)}")
        if list(now.matched) != list(then.matched):
            found.append(f"matched: recorded {list(then.matched)}, now {list(now.matched)}")
        return tuple(found)

    @property
    def verdict(self) -> str:
        """One sentence: the same decision, or how and (if the rules changed) why not."""
        if not self.differences:
            same = "the recomputed decision is the recorded one"
            if self.spec_changed:
                same += " (although the rules changed since: policy fingerprint differs)"
            return same
        text = "the recomputed decision differs from the recorded one: " + "; ".join(
            self.differences
        )
        if self.spec_changed:
            text += (
                "; the spec's rules changed since the decision was recorded (policy "
                f"{(self.step.decision.policy or self.step.run_policy)[:12]} then, "
                f"{self.policy[:12]} now)"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        recorded = self.step.decision
        return {
            "run_id": self.step.run_id,
            "step": self.step.step,
            "action_id": self.step.action_id,
            "workflow": self.step.workflow,
            **self.explanation.to_json(),
            "recorded": {
                "effect": recorded.effect,
                "rules": list(recorded.rules),
                "matched": list(recorded.matched),
                "reasons": list(recorded.reasons),
                "policy": recorded.policy,
            },
            "same_decision": not self.differences,
            "differences": list(self.differences),
            "spec_changed": self.spec_changed,
            "verdict": self.verdict,
        }


def explain_step(
    policy: Policy,
    step: RecordedStep,
    tool_context: Mapping[str, Any],
    effect_class: EffectClass,
    args: Any | None = None,
    model: Mapping[str, Any] = NO_MODEL,
) -> StepExplanation:
    """Recompute a recorded step's decision with ``policy`` and explain it."""
    activation = step.activation(tool_context, args, model)
    return StepExplanation(
        step, explain(policy, step.tool, effect_class, step.tier, activation), policy.fingerprint
    )
