"""Compiled policies: rules indexed by tool, evaluated to one decision, failing closed.

The most restrictive effect among the safe default and every matching rule wins
(deny > escalate > require_approval > allow). Defaults: reads are allowed; writes follow
the autonomy tier; deletes are denied unless a rule explicitly allows them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from warden.errors import CelCompileError, CelError, CelSyntaxError, SpecError, SpecIssue
from warden.ledger._canonical import canonical_json
from warden.policy.cel import CompiledExpression, compile_expression
from warden.spec import Effect, EffectClass, LoadedSpec, Tier, format_path
from warden.spec._loader import content_line, parse_yaml

#: The identifiers a rule may use. Documented in docs/policies.md.
CONTEXT_ROOTS = frozenset(
    {"tool", "args", "principal", "tenant", "run", "provenance", "window", "facts"}
)
#: A fact's arguments are computed from the action, before facts and windows exist.
FACT_ARG_ROOTS = frozenset({"tool", "args", "principal", "tenant", "run"})
#: ``serialize_on`` names the resource from the call's arguments alone.
SERIALIZE_ROOTS = frozenset({"args", "tenant"})


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    name: str
    effect: Effect
    reason: str
    approvers: str | None
    risk: float
    expr: CompiledExpression
    facts: frozenset[str]
    windows: frozenset[str]
    sla: str | None = None
    #: ``expr.evaluate``, held directly: one attribute lookup less per rule on the hot path
    evaluate: Callable[[Mapping[str, Any]], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evaluate", self.expr.evaluate)


@dataclass(frozen=True, slots=True)
class Decision:
    effect: Effect
    #: the rules that produced ``effect`` (the safe default appears as ``default:...``)
    rules: tuple[str, ...]
    reasons: tuple[str, ...]
    risk: float
    approvers: str | None
    policy_fingerprint: str
    #: every rule whose condition held, whatever its effect
    matched: tuple[str, ...] = ()
    #: the most urgent SLA class named by the rules that asked for approval
    sla_class: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "effect": self.effect.value,
            "rules": list(self.rules),
            "matched": list(self.matched),
            "reasons": list(self.reasons),
            "risk": self.risk,
            "approvers": self.approvers,
            "sla_class": self.sla_class,
            "policy": self.policy_fingerprint,
        }


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """The rules that can match one tool, and the lookups they need."""

    rules: tuple[CompiledRule, ...]
    facts: frozenset[str]
    windows: frozenset[str]


_EMPTY = ToolPolicy((), frozenset(), frozenset())


class Policy:
    """A workflow's rules, compiled once at load."""

    def __init__(self, loaded: LoadedSpec) -> None:
        spec = loaded.spec
        self.fingerprint = hashlib.sha256(
            canonical_json([r.model_dump(mode="json") for r in spec.policies]).encode()
        ).hexdigest()
        issues: list[SpecIssue] = []
        self._sla_classes = spec.escalation.sla_classes
        indexed: dict[str, list[CompiledRule]] = {name: [] for name in spec.tools}
        wildcard: list[CompiledRule] = []
        for i, rule in enumerate(spec.policies):
            path = ("policies", i, "when")
            try:
                expr = compile_expression(rule.when, roots=CONTEXT_ROOTS)
            except (CelSyntaxError, CelCompileError) as exc:
                issues.append(_cel_issue(loaded.file, loaded.content_line_of(path), path, exc))
                continue
            facts = _names_under(expr, "facts")
            windows = _names_under(expr, "window")
            for kind, names, declared in (
                ("fact", facts, spec.facts),
                ("window", windows, spec.windows),
            ):
                for missing in sorted(names - set(declared)):
                    issues.append(
                        loaded.issue(
                            path,
                            f"uses {kind} {missing!r}, which is not declared",
                            expected=f"one of {sorted(declared)}"
                            if declared
                            else f"a declared {kind}",
                            found=repr(missing),
                        )
                    )
            compiled = CompiledRule(
                rule.name,
                rule.effect,
                rule.reason,
                rule.approvers,
                rule.risk,
                expr,
                facts,
                windows,
                sla=rule.sla,
            )
            pinned = set(rule.tools) if rule.tools else expr.pinned_values(("tool", "name"))
            if pinned is None:
                wildcard.append(compiled)
                continue
            for name in sorted(pinned):
                if name not in indexed:
                    issues.append(
                        loaded.issue(
                            path,
                            "the rule only matches a tool that is not declared",
                            expected=f"one of {sorted(indexed)}",
                            found=repr(name),
                        )
                    )
                else:
                    indexed[name].append(compiled)
        self.fact_args: dict[str, dict[str, CompiledExpression]] = {}
        for fname, fact in spec.facts.items():
            compiled_args: dict[str, CompiledExpression] = {}
            for arg, source in fact.args.items():
                try:
                    compiled_args[arg] = compile_expression(source, roots=FACT_ARG_ROOTS)
                except (CelSyntaxError, CelCompileError) as exc:
                    fpath = ("facts", fname, "args", arg)
                    issues.append(
                        _cel_issue(loaded.file, loaded.content_line_of(fpath), fpath, exc)
                    )
            self.fact_args[fname] = compiled_args
        #: per tool, its ``serialize_on`` (CEL over ``args`` and ``tenant``)
        self.serialize_on: dict[str, CompiledExpression] = {}
        for tname, tool_spec in spec.tools.items():
            if tool_spec.serialize_on:
                spath = ("tools", tname, "serialize_on")
                try:
                    self.serialize_on[tname] = compile_expression(
                        tool_spec.serialize_on, roots=SERIALIZE_ROOTS
                    )
                except (CelSyntaxError, CelCompileError) as exc:
                    issues.append(
                        _cel_issue(loaded.file, loaded.content_line_of(spath), spath, exc)
                    )
        if issues:
            raise SpecError(issues)
        # Rules keep their spec order within each tool's list so reasons read naturally.
        order = {r.name: i for i, r in enumerate(spec.policies)}
        self._by_tool: dict[str, ToolPolicy] = {}
        for name, rules in indexed.items():
            merged = tuple(sorted([*rules, *wildcard], key=lambda r: order[r.name]))
            self._by_tool[name] = ToolPolicy(
                merged,
                frozenset().union(*(r.facts for r in merged)),
                frozenset().union(*(r.windows for r in merged)),
            )
        self.rule_count = len(spec.policies)
        self._decisions: dict[tuple[Any, ...], Decision] = {}

    def for_tool(self, name: str) -> ToolPolicy:
        return self._by_tool.get(name, _EMPTY)

    def decide(
        self,
        tool_policy: ToolPolicy,
        effect_class: EffectClass,
        tier: Tier,
        activation: Mapping[str, Any],
    ) -> Decision:
        """Evaluate every rule that can match; any rule that errors denies (fail closed)."""
        matched: list[CompiledRule] = []
        errors: list[tuple[str, str]] = []
        for rule in tool_policy.rules:
            try:
                hit = rule.evaluate(activation)
            except CelError as exc:
                errors.append((rule.name, str(exc)))
                continue
            if hit is True:
                matched.append(rule)
            elif hit is not False:
                errors.append((rule.name, f"condition gave {type(hit).__name__}, not bool"))
        if errors:
            return Decision(
                Effect.DENY,
                tuple(name for name, _ in errors),
                tuple(f"rule {name!r} could not be evaluated ({err}); failing closed" for name, err in errors),
                1.0,
                None,
                self.fingerprint,
                tuple(r.name for r in matched),
            )
        # A decision depends only on the effect class, the tier and which rules matched, and
        # only a handful of combinations occur: build each once. (Profiled: building a
        # Decision cost as much as evaluating five rules.)
        key = (effect_class, tier, *matched)
        cached = self._decisions.get(key)
        if cached is None:
            cached = self._combine(effect_class, tier, matched)
            if len(self._decisions) < 10_000:
                self._decisions[key] = cached
        return cached

    def _combine(self, effect_class: EffectClass, tier: Tier, matched: list[CompiledRule]) -> Decision:
        allowed_by_rule = any(rule.effect is Effect.ALLOW for rule in matched)
        base_effect, base_rule, base_reason = _default(effect_class, tier, allowed_by_rule)
        effect = max((rule.effect for rule in matched), key=lambda e: e.rank, default=base_effect)
        if base_effect.rank > effect.rank:
            effect = base_effect
        rules: list[str] = []
        reasons: list[str] = []
        approvers: str | None = None
        sla_classes: list[str] = []
        if base_effect is effect and base_rule:
            rules.append(base_rule)
            reasons.append(base_reason)
        for rule in matched:
            if rule.effect is effect:
                rules.append(rule.name)
                if effect is not Effect.ALLOW:
                    reasons.append(rule.reason)
                    approvers = approvers or rule.approvers
                    if rule.sla is not None:
                        sla_classes.append(rule.sla)
        risk = 0.0
        for rule in matched:
            risk = 1 - (1 - risk) * (1 - rule.risk)
        return Decision(
            effect,
            tuple(rules),
            tuple(reasons),
            round(risk, 4),
            approvers,
            self.fingerprint,
            tuple(r.name for r in matched),
            min(sla_classes, key=lambda c: self._sla_classes.get(c, timedelta.max), default=None),
        )


def raw_condition_issues(text: str, file: str) -> list[SpecIssue]:
    """CEL errors of a spec that failed validation elsewhere, so one run reports them all."""
    try:
        data, lines = parse_yaml(text, file)
    except SpecError:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("policies"), list):
        return []
    issues = []
    for i, rule in enumerate(data["policies"]):
        if isinstance(rule, dict) and isinstance(rule.get("when"), str):
            try:
                compile_expression(rule["when"], roots=CONTEXT_ROOTS)
            except (CelSyntaxError, CelCompileError) as exc:
                path = ("policies", i, "when")
                issues.append(_cel_issue(file, content_line(lines, path), path, exc))
    return issues


def _default(
    effect_class: EffectClass, tier: Tier, allowed_by_rule: bool
) -> tuple[Effect, str, str]:
    if effect_class is EffectClass.READ:
        return Effect.ALLOW, "", ""
    if effect_class is EffectClass.DELETE and not allowed_by_rule:
        return Effect.DENY, "default:delete", "deletes are denied unless a rule allows them"
    if tier is Tier.READ_ONLY:
        return Effect.DENY, "default:tier", "the workflow is read_only: writes are denied"
    if tier is Tier.APPROVE:
        return (
            Effect.REQUIRE_APPROVAL,
            "default:tier",
            "the workflow's tier requires approval for writes",
        )
    # draft writes are allowed by policy and then not executed by the execute stage
    return Effect.ALLOW, "", ""


def _names_under(expr: CompiledExpression, root: str) -> frozenset[str]:
    return frozenset(ref[1] for ref in expr.references if ref[0] == root and len(ref) > 1)


def _cel_issue(
    file: str, line: int | None, path: tuple[str | int, ...], exc: CelSyntaxError | CelCompileError
) -> SpecIssue:
    return SpecIssue(
        file,
        None if line is None else line + exc.line - 1,
        format_path(path),
        f"CEL: {exc.detail} (column {exc.column})",
    )
