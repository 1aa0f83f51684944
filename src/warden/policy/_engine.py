"""Compiled policies: rules indexed by tool, evaluated to one decision, failing closed.

The most restrictive effect among the safe default and every matching rule wins
(deny > escalate > require_approval > allow). Defaults: reads are allowed; writes follow
the autonomy tier (in ``autonomous``, money, identity, production and external_message
calls need an allow rule, else approval); deletes are denied unless a rule explicitly
allows them. Score rules add risk only; a risk at or above ``risk.review_at`` sends an
otherwise allowed call to review. Shadow rules are evaluated and recorded, never enforced.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from warden.errors import CelCompileError, CelError, CelSyntaxError, SpecError, SpecIssue
from warden.ledger._canonical import canonical_json
from warden.policy._derived import (
    BARE_NAME,
    CompiledWindow,
    LazyVariables,
    closure,
    dependency_order,
    find_cycle,
    names_under,
    uses_whole,
)
from warden.policy.cel import CompiledExpression, compile_expression
from warden.spec import (
    Effect,
    EffectClass,
    LoadedSpec,
    RuleEffect,
    Tier,
    WindowSpec,
    format_path,
)
from warden.spec._loader import content_line, parse_yaml

#: The identifiers a rule may use. Documented in docs/policies.md.
CONTEXT_ROOTS = frozenset(
    {
        "tool",
        "model",
        "args",
        "principal",
        "tenant",
        "run",
        "provenance",
        "window",
        "facts",
        "variables",
        "now",
    }
)
#: A fact's arguments are computed from the action and earlier facts (chained facts).
FACT_ARG_ROOTS = frozenset({"tool", "args", "principal", "tenant", "run", "now", "facts"})
#: A window's ``group_by`` and ``field``: the action and its facts.
WINDOW_ROOTS = FACT_ARG_ROOTS
#: In an ``autonomous`` workflow, calls of these classes need a rule that allows them (a
#: threshold such as ``args.amount <= 100.0``); without one they go to approval (deletes
#: stay denied).
THRESHOLD_CLASSES = frozenset(
    {
        EffectClass.MONEY,
        EffectClass.IDENTITY,
        EffectClass.PRODUCTION,
        EffectClass.EXTERNAL_MESSAGE,
        EffectClass.DELETE,
    }
)
_AUTONOMY_DEFAULT = "default:autonomy"
#: The pseudo-rule that names a decision sent to review by ``risk.review_at``.
REVIEW_RULE = "risk:review_at"
#: ``serialize_on`` names the resource from the call's arguments alone.
SERIALIZE_ROOTS = frozenset({"args", "tenant"})
#: A task type's ``success_when`` reads what the run recorded (``pipeline._success``).
SUCCESS_ROOTS = frozenset({"run", "actions"})


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    name: str
    #: None for ``effect: score``: the rule adds its risk and decides nothing
    effect: Effect | None
    reason: str
    approvers: str | None
    risk: float
    expr: CompiledExpression
    facts: frozenset[str]
    windows: frozenset[str]
    sla: str | None = None
    variables: frozenset[str] = frozenset()
    shadow: bool = False
    #: whether the condition (or a variable it uses) reads ``now``
    now: bool = False
    #: ``expr.evaluate``, held directly: one attribute lookup less per rule on the hot path
    evaluate: Callable[[Mapping[str, Any]], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evaluate", self.expr.evaluate)

    @property
    def effect_name(self) -> str:
        return "score" if self.effect is None else self.effect.value


@dataclass(frozen=True, slots=True)
class Decision:
    effect: Effect
    #: the rules that produced ``effect`` (the safe default appears as ``default:...``,
    #: a review asked for by ``risk.review_at`` as ``risk:review_at``)
    rules: tuple[str, ...]
    reasons: tuple[str, ...]
    risk: float
    approvers: str | None
    policy_fingerprint: str
    #: every enforced rule whose condition held, whatever its effect (score rules too)
    matched: tuple[str, ...] = ()
    #: the most urgent SLA class named by the rules that asked for approval
    sla_class: str | None = None
    #: shadow rules that held: ``(rule, effect it would have had)``; never enforced. A
    #: shadow rule that could not be evaluated would have denied: ``(rule, "deny")``.
    shadow: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "effect": self.effect.value,
            "rules": list(self.rules),
            "matched": list(self.matched),
            "reasons": list(self.reasons),
            "risk": self.risk,
            "approvers": self.approvers,
            "sla_class": self.sla_class,
            "policy": self.policy_fingerprint,
        }
        if self.shadow:
            out["shadow"] = [{"rule": rule, "effect": effect} for rule, effect in self.shadow]
        return out


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """The rules that can match one tool, and the lookups they need."""

    rules: tuple[CompiledRule, ...]
    #: every fact to look up before deciding (rules, shadow rules, variables and windows
    #: need them, chained facts included), in no particular order: see ``Policy.fact_order``
    facts: frozenset[str]
    #: the windows whose values the rules (or their variables) read
    windows: frozenset[str]
    shadow: tuple[CompiledRule, ...] = ()
    #: whether any rule uses ``variables`` (only then is the lazy mapping built)
    variables: bool = False
    #: whether anything deciding this tool reads ``now`` (only then is the clock read)
    now: bool = False


_EMPTY = ToolPolicy((), frozenset(), frozenset())


class Policy:
    """A workflow's rules, compiled once at load.

    ``tool_params`` (tool -> its argument names, None when unknown) checks bare argument
    names in windows; ``tool_effects`` (tool -> effect class) the autonomy thresholds. The
    gateway passes both from its tool registry; without them the spec's ``input_schema``
    and ``effect`` are used where given.

    ``warnings`` lists what loads but probably is not what the author meant (today: an
    ``autonomous`` workflow with a money, identity, production, external_message or delete
    tool that no rule allows, so every call of it goes to approval, or is denied).
    """

    def __init__(
        self,
        loaded: LoadedSpec,
        *,
        tool_params: Mapping[str, frozenset[str] | None] | None = None,
        tool_effects: Mapping[str, EffectClass] | None = None,
    ) -> None:
        spec = loaded.spec
        self.fingerprint = _fingerprint(loaded)
        issues: list[SpecIssue] = []
        self._sla_classes = spec.escalation.sla_classes
        self.review_at = spec.risk.review_at
        params = _tool_params(loaded, tool_params)
        effects = _tool_effects(loaded, tool_effects)

        # -- facts: arguments may use earlier facts --------------------------------------
        self.fact_args: dict[str, dict[str, CompiledExpression]] = {}
        fact_deps: dict[str, frozenset[str]] = {}
        # what reads ``now``: the clock is read only for the tools that need it
        now_facts: set[str] = set()
        for fname, fact in spec.facts.items():
            compiled_args: dict[str, CompiledExpression] = {}
            deps: set[str] = set()
            for arg, source in fact.args.items():
                fpath = ("facts", fname, "args", arg)
                expr = _compile(loaded, source, FACT_ARG_ROOTS, fpath, issues)
                if expr is None:
                    continue
                compiled_args[arg] = expr
                if _reads_now(expr):
                    now_facts.add(fname)
                used = names_under(expr, "facts")
                issues.extend(_undeclared(loaded, fpath, "fact", used, spec.facts))
                issues.extend(_whole(loaded, fpath, expr, "facts"))
                deps |= used & set(spec.facts)
            self.fact_args[fname] = compiled_args
            fact_deps[fname] = frozenset(deps)
        cycle = find_cycle(fact_deps)
        if cycle is not None:
            issues.append(
                loaded.issue(
                    ("facts", cycle[0], "args"),
                    "facts use each other in a cycle: " + " -> ".join(cycle),
                    expected="facts that depend on earlier facts only",
                    found="a cycle",
                )
            )
        #: every fact after the facts its arguments use
        self.fact_order: tuple[str, ...] = tuple(
            dependency_order(fact_deps) if cycle is None else fact_deps
        )

        # -- windows ----------------------------------------------------------------------
        self.windows: dict[str, CompiledWindow] = {}
        for wname, window in spec.windows.items():
            compiled_window = _compile_window(loaded, wname, window, params, issues)
            if compiled_window is not None:
                self.windows[wname] = compiled_window

        # -- variables: may use earlier variables, facts and windows --------------------
        self._variable_exprs: dict[str, CompiledExpression] = {}
        var_deps: dict[str, frozenset[str]] = {}
        var_facts: dict[str, frozenset[str]] = {}
        var_windows: dict[str, frozenset[str]] = {}
        now_vars: set[str] = set()
        for vname, source in spec.variables.items():
            vpath = ("variables", vname)
            expr = _compile(loaded, source, CONTEXT_ROOTS, vpath, issues)
            if expr is None:
                continue
            self._variable_exprs[vname] = expr
            used_vars = names_under(expr, "variables")
            issues.extend(_undeclared(loaded, vpath, "variable", used_vars, spec.variables))
            issues.extend(_check_refs(loaded, vpath, expr, spec.facts, spec.windows))
            var_deps[vname] = frozenset(used_vars & set(spec.variables))
            var_facts[vname] = names_under(expr, "facts")
            var_windows[vname] = names_under(expr, "window")
            if _reads_now(expr):
                now_vars.add(vname)
        cycle = find_cycle(var_deps)
        if cycle is not None:
            issues.append(
                loaded.issue(
                    ("variables", cycle[0]),
                    "variables use each other in a cycle: " + " -> ".join(cycle),
                    expected="variables that depend on other variables without a cycle",
                    found="a cycle",
                )
            )
        self._variables: dict[str, Callable[[Mapping[str, Any]], Any]] = {
            name: expr.evaluate for name, expr in self._variable_exprs.items()
        }

        # -- rules ------------------------------------------------------------------------
        indexed: dict[str, list[CompiledRule]] = {name: [] for name in spec.tools}
        wildcard: list[CompiledRule] = []
        for i, rule in enumerate(spec.policies):
            path = ("policies", i, "when")
            expr = _compile(loaded, rule.when, CONTEXT_ROOTS, path, issues)
            if expr is None:
                continue
            issues.extend(_check_refs(loaded, path, expr, spec.facts, spec.windows))
            used_vars = names_under(expr, "variables")
            issues.extend(_undeclared(loaded, path, "variable", used_vars, spec.variables))
            all_vars = closure(used_vars & set(spec.variables), var_deps)
            facts = names_under(expr, "facts").union(*(var_facts.get(v, ()) for v in all_vars))
            windows = names_under(expr, "window").union(
                *(var_windows.get(v, ()) for v in all_vars)
            )
            compiled = CompiledRule(
                rule.name,
                None if rule.effect is RuleEffect.SCORE else Effect(rule.effect.value),
                rule.reason,
                rule.approvers,
                rule.risk,
                expr,
                frozenset(facts),
                frozenset(windows),
                sla=rule.sla,
                variables=all_vars,
                shadow=rule.mode == "shadow",
                now=_reads_now(expr) or bool(all_vars & now_vars),
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
        #: per task type, its success check (evaluated when a run of that type finishes)
        self.success_when: dict[str, CompiledExpression] = {}
        for i, task_type in enumerate(spec.task_types):
            if task_type.success_when is not None:
                tpath = ("task_types", i, "success_when")
                check = _compile(loaded, task_type.success_when, SUCCESS_ROOTS, tpath, issues)
                if check is not None:
                    self.success_when[task_type.name] = check
        if issues:
            raise SpecError(issues)
        # Rules keep their spec order within each tool's list so reasons read naturally.
        order = {r.name: i for i, r in enumerate(spec.policies)}
        self._by_tool: dict[str, ToolPolicy] = {}
        recorded_by: dict[str, list[str]] = {}
        for wname, cw in self.windows.items():
            for tool_name in cw.tools:
                recorded_by.setdefault(tool_name, []).append(wname)
        for name, rules in indexed.items():
            merged = sorted([*rules, *wildcard], key=lambda r: order[r.name])
            enforced = tuple(r for r in merged if not r.shadow)
            shadow = tuple(r for r in merged if r.shadow)
            windows = frozenset().union(*(r.windows for r in merged))
            facts = frozenset().union(
                *(r.facts for r in merged),
                *(self.windows[w].facts for w in {*windows, *recorded_by.get(name, ())}),
            )
            needed_facts = closure(facts, fact_deps)
            touched = {*windows, *recorded_by.get(name, ())}
            self._by_tool[name] = ToolPolicy(
                enforced,
                needed_facts,
                windows,
                shadow,
                any(r.variables for r in merged),
                any(r.now for r in merged)
                or bool(needed_facts & now_facts)
                or any(self.windows[w].now for w in touched),
            )
        self.warnings: tuple[SpecIssue, ...] = tuple(
            _threshold_warnings(loaded, effects, self._by_tool)
        )
        self.rule_count = len(spec.policies)
        self._decisions: dict[tuple[Any, ...], Decision] = {}

    def for_tool(self, name: str) -> ToolPolicy:
        return self._by_tool.get(name, _EMPTY)

    def variables_for(self, activation: Mapping[str, Any]) -> LazyVariables:
        """The ``variables`` of one decision, evaluated as rules first use them."""
        return LazyVariables(self._variables, activation)

    def decide(
        self,
        tool_policy: ToolPolicy,
        effect_class: EffectClass,
        tier: Tier,
        activation: Mapping[str, Any],
    ) -> Decision:
        """Evaluate every rule that can match; any rule that errors denies (fail closed)."""
        if tool_policy.variables and "variables" not in activation:
            activation = dict(activation)
            activation["variables"] = LazyVariables(self._variables, activation)
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
        shadow = _shadow(tool_policy.shadow, activation) if tool_policy.shadow else ()
        if errors:
            return Decision(
                Effect.DENY,
                tuple(name for name, _ in errors),
                tuple(
                    f"rule {name!r} could not be evaluated ({err}); failing closed"
                    for name, err in errors
                ),
                1.0,
                None,
                self.fingerprint,
                tuple(r.name for r in matched),
                shadow=shadow,
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
        return replace(cached, shadow=shadow) if shadow else cached

    def refuse(self, rule: str, reason: str) -> Decision:
        """A deny that no rule made: something the decision needs could not be computed."""
        return Decision(Effect.DENY, (rule,), (reason,), 1.0, None, self.fingerprint)

    def _combine(
        self, effect_class: EffectClass, tier: Tier, matched: list[CompiledRule]
    ) -> Decision:
        allowed_by_rule = any(rule.effect is Effect.ALLOW for rule in matched)
        base_effect, base_rule, base_reason = _default(effect_class, tier, allowed_by_rule)
        effect = max(
            (rule.effect for rule in matched if rule.effect is not None),
            key=lambda e: e.rank,
            default=base_effect,
        )
        if base_effect.rank > effect.rank:
            effect = base_effect
        risk = 0.0
        for rule in matched:
            risk = 1 - (1 - risk) * (1 - rule.risk)
        risk = round(risk, 4)
        rules: list[str] = []
        reasons: list[str] = []
        approvers: str | None = None
        sla_classes: list[str] = []
        review_at = self.review_at
        if review_at is not None and risk >= review_at and effect.rank < Effect.REQUIRE_APPROVAL.rank:
            effect = Effect.REQUIRE_APPROVAL
            rules.append(REVIEW_RULE)
            reasons.append(f"risk {risk:g} is at or above risk.review_at ({review_at:g})")
        else:
            # The autonomy default is a fallback: named only when no rule asked the same.
            if (
                base_effect is effect
                and base_rule
                and not (
                    base_rule == _AUTONOMY_DEFAULT and any(r.effect is effect for r in matched)
                )
            ):
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
        return Decision(
            effect,
            tuple(rules),
            tuple(reasons),
            risk,
            approvers,
            self.fingerprint,
            tuple(r.name for r in matched),
            min(sla_classes, key=lambda c: self._sla_classes.get(c, timedelta.max), default=None),
        )


def _shadow(
    rules: tuple[CompiledRule, ...], activation: Mapping[str, Any]
) -> tuple[tuple[str, str], ...]:
    """What the shadow rules would have decided (an error would have denied)."""
    out: list[tuple[str, str]] = []
    for rule in rules:
        try:
            hit = rule.evaluate(activation)
        except CelError:
            hit = None
        if hit is True:
            out.append((rule.name, rule.effect_name))
        elif hit is not False:
            out.append((rule.name, Effect.DENY.value))
    return tuple(out)


def _reads_now(expr: CompiledExpression) -> bool:
    return any(ref[0] == "now" for ref in expr.references)


def _fingerprint(loaded: LoadedSpec) -> str:
    """The policy's content hash: what decides (rules, and variables and risk if set).

    Written so that a spec using none of the newer keys keeps the fingerprint it had.
    """
    spec = loaded.spec
    rules = [
        r.model_dump(mode="json", exclude={"mode"} if r.mode == "enforce" else None)
        for r in spec.policies
    ]
    content: Any = rules
    if spec.variables or spec.risk.review_at is not None:
        content = {
            "policies": rules,
            "variables": spec.variables,
            "risk": spec.risk.model_dump(mode="json"),
        }
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def _compile(
    loaded: LoadedSpec,
    source: str,
    roots: frozenset[str],
    path: tuple[str | int, ...],
    issues: list[SpecIssue],
) -> CompiledExpression | None:
    try:
        return compile_expression(source, roots=roots)
    except (CelSyntaxError, CelCompileError) as exc:
        issues.append(_cel_issue(loaded.file, loaded.content_line_of(path), path, exc))
        return None


def _undeclared(
    loaded: LoadedSpec,
    path: tuple[str | int, ...],
    kind: str,
    names: frozenset[str],
    declared: Mapping[str, Any],
) -> list[SpecIssue]:
    return [
        SpecIssue(
            loaded.file,
            loaded.content_line_of(path),
            format_path(path),
            f"uses {kind} {missing!r}, which is not declared",
            expected=f"one of {sorted(declared)}" if declared else f"a declared {kind}",
            found=repr(missing),
        )
        for missing in sorted(names - set(declared))
    ]


def _whole(
    loaded: LoadedSpec, path: tuple[str | int, ...], expr: CompiledExpression, root: str
) -> list[SpecIssue]:
    """``facts``/``window``/``variables`` are read by name (``facts.order``), not whole."""
    if not uses_whole(expr, root):
        return []
    return [
        SpecIssue(
            loaded.file,
            loaded.content_line_of(path),
            format_path(path),
            f"uses {root!r} other than as {root}.<name>",
            expected=f"{root}.<name>",
            found=f"{root} used whole (indexed, passed to a function or compared)",
        )
    ]


def _check_refs(
    loaded: LoadedSpec,
    path: tuple[str | int, ...],
    expr: CompiledExpression,
    facts: Mapping[str, Any],
    windows: Mapping[str, Any],
) -> list[SpecIssue]:
    issues = [
        *_undeclared(loaded, path, "fact", names_under(expr, "facts"), facts),
        *_undeclared(loaded, path, "window", names_under(expr, "window"), windows),
    ]
    for root in ("facts", "window", "variables"):
        issues.extend(_whole(loaded, path, expr, root))
    return issues


def _compile_window(
    loaded: LoadedSpec,
    name: str,
    window: WindowSpec,
    params: Mapping[str, frozenset[str] | None],
    issues: list[SpecIssue],
) -> CompiledWindow | None:
    tools = window.tool_names
    compiled: dict[str, CompiledExpression | None] = {"group_by": None, "field": None}
    ok = True
    for key in ("group_by", "field"):
        source: str | None = getattr(window, key)
        if source is None:
            continue
        path: tuple[str | int, ...] = ("windows", name, key)
        if BARE_NAME.match(source) and source not in WINDOW_ROOTS:
            # Kept from the first window syntax: a bare name is an argument of the tool.
            for tool_name in tools:
                known = params.get(tool_name)
                if known is not None and source not in known:
                    ok = False
                    issues.append(
                        SpecIssue(
                            loaded.file,
                            loaded.content_line_of(path),
                            format_path(path),
                            f"{source!r} is not an argument of tool {tool_name!r}; a bare "
                            "name means args.<name> (write a CEL expression, e.g. "
                            "facts.order.customer_id, for anything else)",
                            expected=(f"one of {sorted(known)}" if known else "an argument")
                            + "".join(
                                f" (did you mean {close!r}?)"
                                for close in difflib.get_close_matches(source, known, n=1)
                            ),
                            found=repr(source),
                        )
                    )
            source = f"args.{source}"
        expr = _compile(loaded, source, WINDOW_ROOTS, path, issues)
        if expr is None:
            ok = False
            continue
        found = _check_refs(loaded, path, expr, loaded.spec.facts, {})
        if found:
            ok = False
            issues.extend(found)
        compiled[key] = expr
    if not ok:
        return None
    facts = frozenset().union(
        *(names_under(e, "facts") for e in compiled.values() if e is not None)
    )
    now = any(_reads_now(e) for e in compiled.values() if e is not None)
    return CompiledWindow(
        name, window, tools, compiled["group_by"], compiled["field"], facts, now
    )


def _tool_params(
    loaded: LoadedSpec, given: Mapping[str, frozenset[str] | None] | None
) -> dict[str, frozenset[str] | None]:
    out: dict[str, frozenset[str] | None] = {}
    for name, tool in loaded.spec.tools.items():
        if given is not None and name in given:
            out[name] = given[name]
        else:
            out[name] = schema_params(tool.input_schema)
    return out


def schema_params(schema: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The argument names an input schema declares, or None when it declares none."""
    if schema is None or not isinstance(schema.get("properties"), dict):
        return None
    return frozenset(schema["properties"])


def _tool_effects(
    loaded: LoadedSpec, given: Mapping[str, EffectClass] | None
) -> dict[str, EffectClass]:
    out: dict[str, EffectClass] = {}
    for name, tool in loaded.spec.tools.items():
        if given is not None and name in given:
            out[name] = given[name]
        elif tool.effect is not None:
            out[name] = tool.effect
    return out


def _threshold_warnings(
    loaded: LoadedSpec, effects: Mapping[str, EffectClass], by_tool: Mapping[str, ToolPolicy]
) -> list[SpecIssue]:
    if loaded.spec.tier is not Tier.AUTONOMOUS:
        return []
    warnings: list[SpecIssue] = []
    for name in loaded.spec.tools:
        effect_class = effects.get(name)
        if effect_class not in THRESHOLD_CLASSES:
            continue
        if any(rule.effect is Effect.ALLOW for rule in by_tool[name].rules):
            continue
        if effect_class is EffectClass.DELETE:
            advice = "every call of it is denied; if the agent should delete alone, allow it"
        else:
            advice = "every call of it is sent to approval; if the agent should act alone"
        warnings.append(
            loaded.issue(
                ("tools", name),
                f"the workflow is autonomous but no rule allows {effect_class.value} tool "
                f"{name!r}: {advice} under a threshold with an allow rule (e.g. "
                "when: tool.name == \"" + name + "\" && <the threshold>)",
                expected="an allow rule that can match the tool",
                found="none",
            )
        )
    return warnings


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
    if tier is Tier.AUTONOMOUS and effect_class in THRESHOLD_CLASSES and not allowed_by_rule:
        return (
            Effect.REQUIRE_APPROVAL,
            _AUTONOMY_DEFAULT,
            f"autonomous workflows run {effect_class.value} calls alone only under a rule "
            "that allows them (a threshold); none matched",
        )
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


def _cel_issue(
    file: str, line: int | None, path: tuple[str | int, ...], exc: CelSyntaxError | CelCompileError
) -> SpecIssue:
    return SpecIssue(
        file,
        None if line is None else line + exc.line - 1,
        format_path(path),
        f"CEL: {exc.detail} (column {exc.column})",
    )
