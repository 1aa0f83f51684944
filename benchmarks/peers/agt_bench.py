"""Microsoft Agent Governance Toolkit (AGT) 4.x on the shared rule set.

What AGT publishes (docs/BENCHMARKS.md, measured on toolkit 2.1.0):

* "Policy evaluation (100 rules)" 0.030 ms p50 -- ``agent_os.policies.evaluator.
  PolicyEvaluator.evaluate(context)`` over one ``PolicyDocument`` of 100
  ``PolicyRule`` s (``agent-os/benchmarks/bench_policy.py::bench_100_rule_policy``).
* "Kernel enforcement (allow path)" 0.103 ms p50, described as "the full enforcement
  path" -- ``agent_os.stateless.StatelessKernel.execute(action, params, context)``
  with ``MemoryBackend`` and ``ExecutionContext(agent_id=..., policies=[])``, each
  call driven by ``loop.run_until_complete`` (``bench_kernel.py::
  bench_kernel_execute_allow``).

Both live in ``agent-governance-toolkit-core``, which the bare
``agent-governance-toolkit`` wheel does NOT install: use
``pip install 'agent-governance-toolkit[core]'``.

How our rules are expressed (details and caveats in README.md):

* ``PolicyEvaluator`` rules hold ONE condition on ONE top-level context key
  (``context.get(field)``; no dotted paths, no AND).  A rule
  ``tool == T and args.a OP v`` is therefore written as the single condition
  ``field="T.a"`` and the call's context is flattened with the tool name as the
  key prefix: ``{"tool_name": T, "T.amount": ..., "T.currency": ...}``.  A key only
  exists for the called tool, and AGT treats a missing key as "no match", so this
  is exactly ``tool == T and args.a OP v``.  The flattening is inside the timed
  region.
* ``PolicyEvaluator`` is first-match by ``priority`` (descending).  Rules get
  priority deny=2 > require_approval=1 > allow=0, so the first match is the most
  restrictive match -- the reference decision.  It stops at that first match.
* AGT's v4 ``PolicyAction`` has no approval verdict (allow/deny/audit/block).
  ``require_approval`` is written as ``BLOCK`` -- the same mapping AGT's own
  ``shared_to_policy_document`` bridge uses for ``escalate`` -- and ``block`` is
  read back as ``require_approval``.
* ``agentmesh.governance.PolicyEngine`` (same package) has an expression language
  that writes the rule literally (``tool.name == 'T' and args.amount > 250``) and a
  ``require_approval`` action; it evaluates every rule and resolves conflicts
  (``deny_overrides`` + the same priorities = most restrictive wins).  It is
  reported as an extra row; AGT's published numbers are not for it.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from ._timing import (
    DEFAULT_WARMUP,
    summarize,
    time_awaited_in_loop,
    time_run_until_complete,
    time_sync,
)
from .ruleset import ARG_KINDS, Rule, decision_histogram, no_match_indices, reference_decision

Call = tuple[str, dict[str, Any]]

AGENT_ID = "bench-agent"
AGENT_DID = "did:agentmesh:bench-agent"

_PRIORITY = {"deny": 2, "require_approval": 1, "allow": 0}


class AGTNotInstalledError(ImportError):
    """The Agent Governance Toolkit's policy engine is not importable."""


def _import_agt() -> dict[str, Any]:
    try:
        from agent_os.policies.evaluator import PolicyEvaluator
        from agent_os.policies.schema import (
            PolicyAction,
            PolicyCondition,
            PolicyDefaults,
            PolicyDocument,
            PolicyOperator,
            PolicyRule,
        )
        from agent_os.stateless import ExecutionContext, MemoryBackend, StatelessKernel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise AGTNotInstalledError(
            "Microsoft Agent Governance Toolkit is not installed (module 'agent_os' not "
            "found). Its policy engine ships in agent-governance-toolkit-core, which the "
            "bare package does not pull in. Install it with:\n"
            "    pip install 'agent-governance-toolkit[core]'"
        ) from exc
    return {
        "PolicyEvaluator": PolicyEvaluator,
        "PolicyAction": PolicyAction,
        "PolicyCondition": PolicyCondition,
        "PolicyDefaults": PolicyDefaults,
        "PolicyDocument": PolicyDocument,
        "PolicyOperator": PolicyOperator,
        "PolicyRule": PolicyRule,
        "ExecutionContext": ExecutionContext,
        "MemoryBackend": MemoryBackend,
        "StatelessKernel": StatelessKernel,
    }


def _import_agentmesh() -> dict[str, Any] | None:
    try:
        from agentmesh.governance.policy import Policy, PolicyEngine
        from agentmesh.governance.policy import PolicyRule as MeshRule
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return {"Policy": Policy, "PolicyEngine": PolicyEngine, "PolicyRule": MeshRule}


def agt_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in (
        "agent-governance-toolkit",
        "agent-governance-toolkit-core",
        "pydantic",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["python"] = platform.python_version()
    return out


# --------------------------------------------------------------------------- mapping


def build_policy_document(rules: Sequence[Rule]) -> Any:
    """The rule set as one AGT ``PolicyDocument`` (default action: allow)."""
    agt = _import_agt()
    op_map = {
        ">": agt["PolicyOperator"].GT,
        ">=": agt["PolicyOperator"].GTE,
        "<": agt["PolicyOperator"].LT,
        "==": agt["PolicyOperator"].EQ,
        "!=": agt["PolicyOperator"].NE,
    }
    effect_map = {
        "deny": agt["PolicyAction"].DENY,
        "require_approval": agt["PolicyAction"].BLOCK,
        "allow": agt["PolicyAction"].ALLOW,
    }
    doc_rules = [
        agt["PolicyRule"](
            name=r.name,
            condition=agt["PolicyCondition"](
                field=f"{r.tool}.{r.arg}", operator=op_map[r.op], value=r.value
            ),
            action=effect_map[r.effect],
            priority=_PRIORITY[r.effect],
            message=r.reason,
        )
        for r in rules
    ]
    return agt["PolicyDocument"](
        version="1.0",
        name=f"warden-peer-bench-{len(rules)}",
        rules=doc_rules,
        defaults=agt["PolicyDefaults"](action=agt["PolicyAction"].ALLOW),
    )


def agt_context(tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """Flat, tool-prefixed evaluation context (see module docstring)."""
    ctx: dict[str, Any] = {"agent_id": AGENT_ID, "tool_name": tool}
    for key, value in args.items():
        ctx[f"{tool}.{key}"] = value
    return ctx


_AGT_ACTION_TO_DECISION = {
    "deny": "deny",
    "block": "require_approval",
    "allow": "allow",
    "audit": "allow",
}


def _mesh_literal(value: int | float | str) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def to_agentmesh_condition(rule: Rule) -> str:
    """``tool.name == 'T' and args.amount > 250`` in AgentMesh's expression syntax."""
    if ARG_KINDS[rule.arg] != "string" and rule.op in ("==", "!="):
        raise ValueError(f"AgentMesh expressions only compare quoted strings with ==/!=: {rule}")
    return f"tool.name == '{rule.tool}' and args.{rule.arg} {rule.op} {_mesh_literal(rule.value)}"


def build_agentmesh_engine(rules: Sequence[Rule]) -> Any:
    mesh = _import_agentmesh()
    if mesh is None:
        return None
    engine = mesh["PolicyEngine"](conflict_strategy="deny_overrides")
    engine.load_policy(
        mesh["Policy"](
            name=f"warden-peer-bench-{len(rules)}",
            agents=["*"],
            default_action="allow",
            rules=[
                mesh["PolicyRule"](
                    name=r.name,
                    description=r.reason,
                    stage="pre_tool",
                    condition=to_agentmesh_condition(r),
                    action=r.effect,
                    priority=_PRIORITY[r.effect],
                )
                for r in rules
            ],
        )
    )
    return engine


def _mesh_context(tool: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"agent_id": AGENT_ID, "tool": {"name": tool}, "args": args}


# --------------------------------------------------------------------------- bench


def bench_agt(
    rules: Sequence[Rule],
    calls: Sequence[Call],
    repeat: int = 20_000,
    warmup: int = DEFAULT_WARMUP,
    include_agentmesh: bool = True,
) -> dict[str, Any]:
    """Time AGT on ``rules`` x ``calls``; every timing is µs for ONE call.

    Returned keys (each a dict with ``median_us``, ``p99_us``, ``samples``, ...):

    ``policy_eval``
        (a) ``PolicyEvaluator.evaluate`` on the rule set -- the engine behind AGT's
        published 100-rule figure.
    ``full_path``
        (b) AGT's "full enforcement path" with our rules enforced: the
        ``PolicyEvaluator`` gate and then ``StatelessKernel.execute`` for calls the
        gate lets through, driven by ``run_until_complete`` per call as AGT's
        ``bench_kernel.py`` does.
    ``full_path_in_loop``
        (b) again, but awaited inside an already running event loop.
    ``kernel_only``
        ``StatelessKernel.execute`` exactly as AGT's published "allow path"
        benchmark runs it (``policies=[]``).  Our rules are NOT consulted -- the
        kernel's own policy dicts cannot express them.  For reproducing 103 µs.
    ``kernel_only_in_loop``
        The same, awaited inside a running loop.
    ``agt_own_setup``
        Calibration: AGT's own ``bench_policy.py`` N-rule setup on this machine
        (its context matches the first rule checked).  Not our rules.
    ``agentmesh_eval``
        ``agentmesh.governance.PolicyEngine.evaluate`` with the rules as literal
        expressions (if importable).

    Before timing, every path that enforces the rules is checked against
    :func:`ruleset.reference_decision` for every call; a mismatch raises
    ``AssertionError``.
    """
    agt = _import_agt()
    if not calls:
        raise ValueError("need at least one call")
    calls = list(calls)
    expected = [reference_decision(rules, t, a) for t, a in calls]
    no_match = no_match_indices(rules, calls)

    evaluator = agt["PolicyEvaluator"](policies=[build_policy_document(rules)])
    kernel = agt["StatelessKernel"](backend=agt["MemoryBackend"]())
    kctx = agt["ExecutionContext"](agent_id=AGENT_ID, policies=[])
    evaluate = evaluator.evaluate

    def policy_eval(tool: str, args: dict[str, Any]) -> Any:
        return evaluate(agt_context(tool, args))

    async def kernel_only(tool: str, args: dict[str, Any]) -> Any:
        return await kernel.execute(tool, args, kctx)

    async def full_path(tool: str, args: dict[str, Any]) -> str:
        decision = evaluate(agt_context(tool, args))
        if not decision.allowed:
            return _AGT_ACTION_TO_DECISION[decision.action]
        result = await kernel.execute(tool, args, kctx)
        return "allow" if result.success else "deny"

    # ---- correctness cross-check (untimed) ----
    import asyncio

    check_loop = asyncio.new_event_loop()
    try:
        for i, (tool, args) in enumerate(calls):
            snapshot = dict(args)
            got = _AGT_ACTION_TO_DECISION[policy_eval(tool, args).action]
            assert got == expected[i], (
                f"AGT PolicyEvaluator decided {got!r}, reference {expected[i]!r} for {tool} {args}"
            )
            got_full = check_loop.run_until_complete(full_path(tool, args))
            assert got_full == expected[i], (
                f"AGT full path decided {got_full!r}, reference {expected[i]!r} for {tool} {args}"
            )
            res = check_loop.run_until_complete(kernel_only(tool, args))
            assert res.success, f"StatelessKernel refused {tool}: {res.error}"
            assert args == snapshot, "AGT mutated the call's args"
    finally:
        check_loop.close()

    results: dict[str, Any] = {}
    n = len(calls)

    results["policy_eval"] = {
        "what": "PolicyEvaluator.evaluate(context) incl. building the flat context",
        "checked": True,
        **summarize(time_sync(policy_eval, calls, repeat, warmup), n, no_match),
    }
    results["full_path"] = {
        "what": "PolicyEvaluator gate + StatelessKernel.execute, run_until_complete per call",
        "checked": True,
        **summarize(time_run_until_complete(full_path, calls, repeat, warmup), n, no_match),
    }
    results["full_path_in_loop"] = {
        "what": "PolicyEvaluator gate + StatelessKernel.execute, awaited in a running loop",
        "checked": True,
        **summarize(time_awaited_in_loop(full_path, calls, repeat, warmup), n, no_match),
    }
    results["kernel_only"] = {
        "what": "StatelessKernel.execute(policies=[]) as AGT's bench_kernel.py; rules NOT applied",
        "checked": False,
        **summarize(time_run_until_complete(kernel_only, calls, repeat, warmup), n, no_match),
    }
    results["kernel_only_in_loop"] = {
        "what": "StatelessKernel.execute(policies=[]) awaited in a running loop; rules NOT applied",
        "checked": False,
        **summarize(time_awaited_in_loop(kernel_only, calls, repeat, warmup), n, no_match),
    }

    # Calibration: AGT's own bench_policy.py setup at the same rule count, on this
    # machine (rules "action == action_i", priority i; the context matches the
    # highest-priority rule, so only ONE condition is evaluated after the sort).
    calib_doc = agt["PolicyDocument"](
        version="1.0",
        name=f"bench-policy-{len(rules)}",
        rules=[
            agt["PolicyRule"](
                name=f"rule-{i}",
                condition=agt["PolicyCondition"](
                    field="action", operator=agt["PolicyOperator"].EQ, value=f"action_{i}"
                ),
                action=agt["PolicyAction"].DENY if i % 3 == 0 else agt["PolicyAction"].ALLOW,
                priority=i,
            )
            for i in range(len(rules))
        ],
        defaults=agt["PolicyDefaults"](action=agt["PolicyAction"].ALLOW),
    )
    calib_eval = agt["PolicyEvaluator"](policies=[calib_doc]).evaluate
    calib_ctx = {"action": f"action_{max(len(rules) - 1, 0)}", "agent_id": "bench"}

    def agt_own_setup(tool: str, args: dict[str, Any]) -> Any:
        return calib_eval(calib_ctx)

    results["agt_own_setup"] = {
        "what": "AGT's bench_policy.py N-rule setup (first checked rule matches); calibration",
        "checked": False,
        **summarize(time_sync(agt_own_setup, calls, repeat, warmup), n),
    }

    if include_agentmesh:
        engine = build_agentmesh_engine(rules)
        if engine is not None:
            mesh_eval = engine.evaluate

            def agentmesh_eval(tool: str, args: dict[str, Any]) -> Any:
                return mesh_eval(AGENT_DID, _mesh_context(tool, args), "pre_tool")

            for i, (tool, args) in enumerate(calls):
                got = agentmesh_eval(tool, args).action
                assert got == expected[i], (
                    f"AgentMesh PolicyEngine decided {got!r}, reference {expected[i]!r} "
                    f"for {tool} {args}"
                )
            results["agentmesh_eval"] = {
                "what": "agentmesh PolicyEngine.evaluate (expression rules, deny_overrides)",
                "checked": True,
                **summarize(time_sync(agentmesh_eval, calls, repeat, warmup), n, no_match),
            }

    return {
        "peer": "agt",
        "n_rules": len(rules),
        "n_calls": n,
        "repeat": repeat,
        "warmup": warmup,
        "decisions": decision_histogram(rules, calls),
        "versions": agt_versions(),
        "python_impl": sys.implementation.name,
        "results": results,
        # Short aliases for the two figures AGT publishes.
        "policy_eval": results["policy_eval"],
        "full_enforcement": results["full_path"],
    }


__all__ = [
    "AGTNotInstalledError",
    "agt_context",
    "agt_versions",
    "bench_agt",
    "build_agentmesh_engine",
    "build_policy_document",
    "to_agentmesh_condition",
]
