"""Replay: re-decide recorded calls under a candidate spec, executing nothing.

Each recorded call is decided again by the candidate's policy with what the gateway saw
when it was made, rebuilt from the ledger: its arguments (``action_requested``), its facts
as looked up then (the ``facts`` event: no fact tool is called), the run as it stood (step,
per-tool counts, the model cost and tokens so far, the risk of its earlier calls under the
candidate), the principal (``run_started``) and the clock (the recorded decision's time).
Windows are rebuilt from recorded history: the candidate's windows over the tenant's
actions that took effect before the call (executed, or still awaiting approval), each
entered at its own decision's time, as the live store would have held them.

History is what was recorded: a call the candidate would have denied but that executed
still counts in later windows (a replay is a comparison of decisions, not a simulation of
a different past). Nothing is written to the store.

A call whose context cannot be rebuilt (a fact the candidate needs that was not looked up
then, a tool whose effect class only its implementation knows, a rule reading
``principal.key``) is reported ``not_replayable`` with the reason, never skipped.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select

from warden.errors import WardenError
from warden.policy import Policy, WindowKeyError
from warden.policy._context import model_context
from warden.policy._derived import CompiledWindow
from warden.policy._provenance import _CLEAN
from warden.spec import MODEL_TOOL_PREFIX, EffectClass, LoadedSpec, Tier
from warden.store import Store
from warden.store._tables import ledger_events, runs

__all__ = ["ReplayReport", "ReplayedCall", "replay"]

Status = Literal["same", "changed", "not_replayable", "not_decided"]


@dataclass(frozen=True, slots=True)
class ReplayedCall:
    """One recorded call and what the candidate decides for it."""

    run_id: str
    tenant: str
    action_id: str
    step: int
    tool: str
    ts: str
    args: Any
    status: Status
    old_effect: str | None = None
    old_rules: tuple[str, ...] = ()
    new_effect: str | None = None
    new_rules: tuple[str, ...] = ()
    #: the candidate's reasons (changed), or why the call could not be re-decided
    why: tuple[str, ...] = ()
    #: the windows the candidate read, as rebuilt
    window: dict[str, float | int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "tenant": self.tenant,
            "action_id": self.action_id,
            "step": self.step,
            "tool": self.tool,
            "ts": self.ts,
            "args": self.args,
            "status": self.status,
            "old": {"effect": self.old_effect, "rules": list(self.old_rules)},
            "new": {"effect": self.new_effect, "rules": list(self.new_rules)},
            "why": list(self.why),
        }
        if self.window:
            out["window"] = self.window
        return out


@dataclass(frozen=True, slots=True)
class ReplayReport:
    spec: str
    workflow: str
    policy_fingerprint: str
    #: every selected call, in decision order
    calls: tuple[ReplayedCall, ...]

    def of(self, status: Status) -> list[ReplayedCall]:
        return [c for c in self.calls if c.status == status]

    @property
    def counts(self) -> dict[str, int]:
        out = {"same": 0, "changed": 0, "not_replayable": 0, "not_decided": 0}
        for c in self.calls:
            out[c.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "workflow": self.workflow,
            "policy_fingerprint": self.policy_fingerprint,
            "calls": len(self.calls),
            "counts": self.counts,
            "changed": [c.to_json() for c in self.of("changed")],
            "not_replayable": [c.to_json() for c in self.of("not_replayable")],
            "not_decided": [c.to_json() for c in self.of("not_decided")],
        }


# -- what the ledger recorded ----------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    tenant: str
    agent: str = ""
    scopes: list[str] = field(default_factory=list)
    tier: str | None = None
    task_type: str | None = None
    end_user: str | None = None
    opened_by: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    tokens: int = 0
    #: the highest risk of the run's calls re-decided so far (under the candidate)
    risk: float = 0.0
    started: bool = False


@dataclass(slots=True)
class _Action:
    action_id: str
    run_id: str
    tenant: str
    tool: str
    args: Any
    step: int
    requested_ts: str
    counts: dict[str, int]
    cost_usd: float
    tokens: int
    facts: dict[str, Any] | None = None
    facts_error: str | None = None
    decision: dict[str, Any] | None = None
    decision_ts: str | None = None
    executed: bool = False
    awaiting: bool = False
    refused: str | None = None
    #: a model call: the model that answered (``usage``), and why it was not the one
    #: asked for (a budget's reroute), for calls of a route (``model:<route>``)
    model: str | None = None
    rerouted: str | None = None
    #: the tool the policy decided for: the requested one, or a route's model
    resolved: str = ""


_ENDED = frozenset({"denied", "failed", "drafted", "approval_expired", "approval_cancelled"})


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ts_text(moment: datetime) -> str:
    from warden.store._tables import utc_text

    return str(utc_text(moment))


# -- the candidate's view of the tools -------------------------------------------------------


def _tool_contexts(
    loaded: LoadedSpec, tools: Iterable[Callable[..., Any]] | None
) -> tuple[Policy, dict[str, dict[str, Any] | str]]:
    """The candidate's policy, and per tool the ``tool`` value rules see (or why it cannot
    be known)."""
    if tools is not None:
        from warden.gateway import compiled_for
        from warden.pipeline._services import _tool_context

        registry, policy = compiled_for(loaded, list(tools))
        return policy, {t.name: _tool_context(t) for t in registry}
    contexts: dict[str, dict[str, Any] | str] = {}
    for name, declared in loaded.spec.tools.items():
        is_model = name.startswith(MODEL_TOOL_PREFIX) and (
            name.removeprefix(MODEL_TOOL_PREFIX) in loaded.spec.models
        )
        effect = EffectClass.READ if is_model else declared.effect
        if effect is None:
            contexts[name] = (
                f"the candidate spec does not declare tool {name!r}'s effect (its "
                "implementation does): pass the tools (--tools) to replay its calls"
            )
            continue
        idempotent = declared.idempotent
        contexts[name] = {
            "name": name,
            "effect": effect.value,
            "scope": declared.scope,
            "idempotent": (effect is EffectClass.READ) if idempotent is None else idempotent,
            "untrusted_output": bool(declared.untrusted_output),
            "kind": "model" if is_model else "tool",
        }
    return Policy(loaded), contexts


# -- rebuilt windows -------------------------------------------------------------------------


class _WindowHistory:
    """The candidate's window entries of recorded actions, per (tenant, window, group), in
    time order (actions are entered as the replay reaches their decision)."""

    def __init__(self, windows: Mapping[str, CompiledWindow]) -> None:
        self.windows = windows
        self.by_tool: dict[str, list[str]] = {}
        for name, w in windows.items():
            for tool in w.tools:
                self.by_tool.setdefault(tool, []).append(name)
        # key -> (timestamps in µs, values, items)
        self._entries: dict[tuple[str, str, str], tuple[list[int], list[float], list[str | None]]] = {}
        #: (tenant, window) -> why an earlier action's entry could not be computed
        self.broken: dict[tuple[str, str], str] = {}

    def add(self, tenant: str, window: str, group: str, ts_us: int, value: float, item: str | None) -> None:
        ts, values, items = self._entries.setdefault((tenant, window, group), ([], [], []))
        ts.append(ts_us)
        values.append(value)
        items.append(item)

    def value(self, tenant: str, window: str, group: str, now_us: int) -> float | int:
        spec = self.windows[window].spec
        found = self._entries.get((tenant, window, group))
        if found is None:
            return 0 if spec.aggregate in ("count", "count_distinct") else 0.0
        ts, values, items = found
        start = bisect.bisect_left(ts, now_us - int(spec.period.total_seconds() * 1_000_000))
        end = bisect.bisect_left(ts, now_us)  # strictly before the call
        if spec.aggregate == "count":
            return end - start
        if spec.aggregate == "count_distinct":
            return len({i for i in items[start:end] if i is not None})
        if spec.aggregate == "max":
            return float(max(values[start:end], default=0.0))
        return float(sum(values[start:end]))


def _epoch_us(text: str) -> int:
    return int(_parse_ts(text).timestamp() * 1_000_000)


# -- the replay ------------------------------------------------------------------------------


def replay(
    store: Store,
    loaded: LoadedSpec,
    *,
    run_id: str | None = None,
    since: datetime | None = None,
    tenant: str | None = None,
    tools: Iterable[Callable[..., Any]] | None = None,
) -> ReplayReport:
    """Re-decide the calls of run ``run_id`` (or every call at or after ``since``) under
    ``loaded``; reads the store, writes nothing."""
    if (run_id is None) == (since is None):
        raise WardenError("replay needs exactly one of a run id or a time (since)")
    if since is not None and since.tzinfo is None:
        raise WardenError("replay --since needs a timezone-aware time (e.g. ...Z or +00:00)")
    policy, contexts = _tool_contexts(loaded, tools)
    history = _WindowHistory(policy.windows)
    longest = max((w.spec.period for w in policy.windows.values()), default=timedelta(0))

    with store.read() as conn:
        if run_id is not None:
            row = conn.execute(
                select(runs.c.tenant, runs.c.started_at).where(runs.c.run_id == run_id)
            ).first()
            if row is None:
                first = conn.execute(
                    select(ledger_events.c.tenant, ledger_events.c.ts)
                    .where(ledger_events.c.run_id == run_id)
                    .order_by(ledger_events.c.ts)
                    .limit(1)
                ).first()
                if first is None:
                    raise WardenError(f"no run {run_id!r} in the store")
                tenants = [first[0]]
                start = _parse_ts(first[1])
            else:
                tenants = [row[0]]
                start = row[1]
        else:
            assert since is not None
            start = since
            query = select(ledger_events.c.tenant).distinct().where(
                ledger_events.c.ts >= _ts_text(since)
            )
            if tenant is not None:
                query = query.where(ledger_events.c.tenant == tenant)
            tenants = sorted(r[0] for r in conn.execute(query))
            # Runs that started before ``since`` and went on after it: their earlier steps
            # count (run_started, run.counts, cost so far).
            if tenants:
                active = select(ledger_events.c.run_id).where(
                    ledger_events.c.ts >= _ts_text(since),
                    ledger_events.c.tenant.in_(tenants),
                    ledger_events.c.run_id.is_not(None),
                )
                opened = conn.execute(
                    select(func.min(runs.c.started_at)).where(runs.c.run_id.in_(active))
                ).scalar()
                if opened is not None and opened < start:
                    start = opened
        lower = _ts_text(start - longest)
        run_rows = {
            r.run_id: r
            for r in conn.execute(
                select(runs.c.run_id, runs.c.end_user, runs.c.opened_by, runs.c.tenant).where(
                    runs.c.tenant.in_(tenants)
                )
            )
        } if tenants else {}
        events = (
            conn.execute(
                select(
                    ledger_events.c.tenant,
                    ledger_events.c.run_id,
                    ledger_events.c.ts,
                    ledger_events.c.type,
                    ledger_events.c.payload,
                )
                .where(ledger_events.c.tenant.in_(tenants), ledger_events.c.ts >= lower)
                .order_by(ledger_events.c.ts, ledger_events.c.id)
            ).all()
            if tenants
            else []
        )

    runs_seen: dict[str, _Run] = {}
    actions: dict[str, _Action] = {}
    decided: list[_Action] = []  # in decision order
    undecided: list[_Action] = []
    for ev_tenant, ev_run, ts, kind, raw in events:
        if kind not in _KINDS or ev_run is None:
            continue
        payload = json.loads(raw)
        run = runs_seen.get(ev_run)
        if run is None:
            run = runs_seen[ev_run] = _Run(ev_tenant)
            found = run_rows.get(ev_run)
            if found is not None:
                run.end_user, run.opened_by = found.end_user, found.opened_by
        if kind == "run_started":
            run.agent = payload.get("agent", "")
            run.scopes = list(payload.get("scopes", []))
            run.tier = payload.get("tier")
            run.task_type = payload.get("task_type")
            run.started = True
            continue
        if kind == "usage":
            used = actions.get(payload.get("action_id", ""))
            if used is not None:
                used.model, used.rerouted = payload.get("model"), payload.get("rerouted")
            run.cost_usd += float(payload.get("cost_usd") or 0)
            usage = payload.get("usage")
            if usage is not None:
                total = usage.get("total_tokens")
                if total is None:
                    total = int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
                run.tokens += int(total)
            elif not payload.get("cached"):  # unknown usage: charged its reservation
                run.tokens += int((payload.get("budget") or {}).get("held_tokens") or 0)
            continue
        aid = payload.get("action_id")
        if kind == "action_requested":
            tool = payload["tool"]
            run.counts[tool] = run.counts.get(tool, 0) + 1
            action = _Action(
                aid, ev_run, ev_tenant, tool, payload.get("args"), int(payload.get("step", 0)),
                ts, dict(run.counts), run.cost_usd, run.tokens,
            )
            actions[aid] = action
            undecided.append(action)
            continue
        found_action = actions.get(aid) if aid is not None else None
        if found_action is None:
            continue
        action = found_action
        if kind == "facts":
            action.facts = payload.get("facts") or {}
            action.facts_error = payload.get("error")
        elif kind == "decision":
            if action.decision is None:  # an approver's edit decides again: the first counts
                action.decision, action.decision_ts = payload, ts
                decided.append(action)
        elif kind == "executed":
            action.executed = action.executed or not payload.get("replayed", False)
            action.awaiting = False
        elif kind == "approval_requested":
            action.awaiting = True
        elif kind == "approval_decided":
            action.awaiting = action.awaiting and payload.get("decision") != "rejected"
        elif kind in _ENDED:
            action.awaiting = False
            if kind == "denied" and action.decision is None:
                action.refused = f"refused before the policy ({payload.get('kind')})"
            elif kind == "failed" and action.decision is None:
                action.refused = f"failed before the policy ({payload.get('kind')})"

    def selected(a: _Action) -> bool:
        if run_id is not None:
            return a.run_id == run_id
        assert since is not None
        return _parse_ts(a.requested_ts) >= since

    out: list[ReplayedCall] = []
    for action in decided:
        run = runs_seen[action.run_id]
        now_text = action.decision_ts
        assert now_text is not None
        now_us = _epoch_us(now_text)
        activation, problem = _activation(action, run, contexts, loaded, now_text)
        if selected(action):
            out.append(
                _decide(action, run, activation, problem, policy, history, now_us)
            )
        else:  # an earlier call of the run, not replayed: its risk as recorded
            run.risk = max(run.risk, float((action.decision or {}).get("risk") or 0.0))
        if not (action.executed or action.awaiting):
            continue
        if activation is not None:
            _enter(action, activation, history, now_us)
        else:
            # It took effect, but the candidate's windows cannot place it: any later call
            # reading them cannot be decided as the store would.
            for name in history.by_tool.get(action.resolved or action.tool, ()):
                history.broken.setdefault(
                    (action.tenant, name), f"action {action.action_id}: {problem}"
                )
    for action in undecided:
        if action.decision is None and selected(action):
            why = action.refused or (
                f"the fact lookup failed when recorded: {action.facts_error}"
                if action.facts_error
                else "no decision was recorded (the call did not reach the policy)"
            )
            status: Status = "not_replayable" if action.facts_error else "not_decided"
            out.append(
                ReplayedCall(
                    action.run_id, action.tenant, action.action_id, action.step, action.tool,
                    action.requested_ts, action.args, status, why=(why,),
                )
            )
    if run_id is not None and not out and run_id not in runs_seen:
        raise WardenError(f"no recorded calls of run {run_id!r}")
    return ReplayReport(
        loaded.file, loaded.spec.name, policy.fingerprint, tuple(out)
    )


_KINDS = frozenset(
    {
        "run_started",
        "usage",
        "action_requested",
        "facts",
        "decision",
        "executed",
        "approval_requested",
        "approval_decided",
        *_ENDED,
    }
)


def _activation(
    action: _Action,
    run: _Run,
    contexts: Mapping[str, dict[str, Any] | str],
    loaded: LoadedSpec,
    now_text: str,
) -> tuple[dict[str, Any] | None, str | None]:
    action.resolved = action.tool
    route = action.tool.removeprefix(MODEL_TOOL_PREFIX)
    if action.tool.startswith(MODEL_TOOL_PREFIX) and route in loaded.spec.routes:
        # The route picked a model before the policy decided; the pick is recorded only
        # with the call's usage, and not when a budget then rerouted it.
        if action.model is None or action.rerouted is not None:
            return None, (
                f"a call of the route {route!r}: the model it picked was not recorded"
                + ("" if action.rerouted is None else f" (rerouted: {action.rerouted})")
            )
        action.resolved = MODEL_TOOL_PREFIX + action.model
    tool_ctx = contexts.get(action.resolved)
    if tool_ctx is None:
        return None, f"the candidate spec has no tool {action.resolved!r}"
    if isinstance(tool_ctx, str):
        return None, tool_ctx
    if not run.started or run.tier is None:
        return None, "the run's run_started event is not in the store"
    decision = action.decision or {}
    activation: dict[str, Any] = {
        "tool": tool_ctx,
        "model": model_context(loaded.spec.models, action.resolved),
        "args": action.args if isinstance(action.args, dict) else {},
        "principal": {"agent": run.agent, "scopes": run.scopes, "key": None},
        "tenant": action.tenant,
        "run": {
            "id": action.run_id,
            "step": action.step,
            "tier": run.tier,
            "task_type": run.task_type,
            "counts": action.counts,
            "end_user": run.end_user,
            "opened_by": run.opened_by,
            "risk": run.risk,
            "cost_usd": action.cost_usd,
            "tokens": action.tokens,
        },
        "provenance": decision.get("provenance") or _CLEAN,
        "window": {},
        "facts": dict(action.facts or {}),
        "now": _parse_ts(now_text),
    }
    return activation, None


def _decide(
    action: _Action,
    run: _Run,
    activation: dict[str, Any] | None,
    problem: str | None,
    policy: Policy,
    history: _WindowHistory,
    now_us: int,
) -> ReplayedCall:
    recorded = action.decision or {}
    base = {
        "run_id": action.run_id,
        "tenant": action.tenant,
        "action_id": action.action_id,
        "step": action.step,
        "tool": action.tool,
        "ts": action.decision_ts or action.requested_ts,
        "args": action.args,
        "old_effect": recorded.get("effect"),
        "old_rules": tuple(recorded.get("rules") or ()),
    }
    if problem is not None:
        if problem.startswith("the candidate spec has no tool"):
            # Refused as an unknown tool before any policy: a decision that changes.
            return ReplayedCall(
                **base, status="changed" if base["old_effect"] != "deny" else "same",
                new_effect="deny", new_rules=("unknown_tool",), why=(problem,),
            )
        return ReplayedCall(**base, status="not_replayable", why=(problem,))
    assert activation is not None
    tool_policy = policy.for_tool(action.resolved)
    missing = sorted(tool_policy.facts - set(activation["facts"]))
    if missing:
        return ReplayedCall(
            **base,
            status="not_replayable",
            why=tuple(
                f"fact {name!r} was not looked up when the call was recorded" for name in missing
            ),
        )
    for rule in tool_policy.rules:
        if any(ref[:2] == ("principal", "key") for ref in rule.expr.references):
            return ReplayedCall(
                **base,
                status="not_replayable",
                why=(f"rule {rule.name!r} reads principal.key, which is not recorded",),
            )
    window: dict[str, float | int] = {}
    decision = None
    if tool_policy.windows:
        try:
            for name in sorted(tool_policy.windows):
                broken = history.broken.get((action.tenant, name))
                if broken is not None:
                    return ReplayedCall(
                        **base,
                        status="not_replayable",
                        why=(f"window {name!r} could not be rebuilt: {broken}",),
                    )
                group = history.windows[name].group_of(activation)
                window[name] = history.value(action.tenant, name, group, now_us)
        except WindowKeyError as exc:
            decision = policy.refuse(f"window:{exc.window}", f"{exc}; failing closed")
        activation["window"] = window
    if decision is None:
        effect_class = EffectClass(activation["tool"]["effect"])
        decision = policy.decide(
            tool_policy, effect_class, Tier(activation["run"]["tier"]), activation
        )
    if decision.risk > run.risk:
        run.risk = decision.risk
    new_rules = decision.rules
    changed = decision.effect.value != base["old_effect"] or set(new_rules) != set(base["old_rules"])
    return ReplayedCall(
        **base,
        status="changed" if changed else "same",
        new_effect=decision.effect.value,
        new_rules=new_rules,
        why=decision.reasons if changed else (),
        window=window,
    )


def _enter(
    action: _Action, activation: Mapping[str, Any], history: _WindowHistory, now_us: int
) -> None:
    """Add a recorded action that took effect to the candidate's windows."""
    for name in history.by_tool.get(action.resolved, ()):
        window = history.windows[name]
        missing = window.facts - set(activation["facts"])
        try:
            if missing:
                raise WindowKeyError(name, f"fact {sorted(missing)[0]!r} was not recorded")
            group = window.group_of(activation)
            value, item = window.entry_of(activation)
        except WindowKeyError as exc:
            history.broken.setdefault(
                (action.tenant, name), f"action {action.action_id}: {exc}"
            )
            continue
        history.add(action.tenant, name, group, now_us, value, item)
