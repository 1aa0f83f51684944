"""Facts, windows and provenance into one decision; windowed decisions are atomic.

Facts are looked up through the same executor as actions: a fact's tool is stopped by its
kill switch and has its timeout, breaker and minted credential. Window entries this call
records are a reservation: released when the call ends without its effect.
"""

from __future__ import annotations

import asyncio
from typing import Any

from warden.errors import CelError
from warden.ledger import to_jsonable
from warden.pipeline._call import Call
from warden.pipeline._services import Services
from warden.pipeline.stages._base import Next
from warden.policy import ToolPolicy, WindowKeyError
from warden.results import Allowed, Denied, Drafted, Failed, FailureKind, Pending, Result
from warden.spec import Effect
from warden.tools import SchemaViolation


class PolicyStage:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call, next: Next) -> Result:
        if call.approval is not None:
            # Decided when it was proposed (and again when an approver edited it).
            result = await next(call)
            if _ended_without_effect(call, result):
                await asyncio.to_thread(self._release, call)
            return result
        denied, recorded = await self.evaluate(call)
        if denied is not None:
            return denied
        if not recorded:
            return await next(call)
        try:
            result = await next(call)
        except BaseException:
            if not call.effect_possible:
                await asyncio.to_thread(self._release, call)
            raise
        if _ended_without_effect(call, result):
            await asyncio.to_thread(self._release, call)
        return result

    def _release(self, call: Call) -> None:
        with self.svc.store.write(durable=False) as conn:
            self.svc.windows.void(conn, call.action_id)

    async def evaluate(self, call: Call) -> tuple[Result | None, bool]:
        """Decide the call: (a denial or None, whether window entries were recorded)."""
        svc, run, tool = self.svc, call.run, call.tool
        assert tool is not None
        tool_policy = svc.policy.for_tool(tool.name)
        principal = run.principal
        if call.api_key is not None:
            principal = {**principal, "key": call.api_key}
        activation: dict[str, Any] = {
            "tool": svc.tool_contexts[tool.name],
            "model": svc.model_contexts[tool.name],
            "args": call.args,
            "principal": principal,
            "tenant": run.tenant,
            "run": run.context(),
            "provenance": run.provenance.tag(call.args),
            "window": call.windows,
            "facts": call.facts,
        }
        if tool_policy.now:  # the clock only for rules (facts, windows) that read it
            activation["now"] = svc.clock()
        call.provenance = activation["provenance"]
        if tool_policy.facts:
            failure = await self._facts(call, tool_policy.facts, activation)
            if failure is not None:
                return failure, False
        recorded = bool(tool_policy.windows or svc.windows.recorded_by(tool.name))
        if recorded:
            recorded = await asyncio.to_thread(self._decide_windowed, call, tool_policy, activation)
        else:
            call.decision = svc.policy.decide(tool_policy, tool.effect, run.tier, activation)
            self._record(call)
        decision = call.decision
        assert decision is not None
        if decision.effect is Effect.DENY:
            return (
                Denied(FailureKind.POLICY_BLOCK, decision.reasons, call.action_id, decision.rules),
                recorded,
            )
        return None, recorded

    def _decide_windowed(
        self, call: Call, tool_policy: ToolPolicy, activation: dict[str, Any]
    ) -> bool:
        svc, run, tool = self.svc, call.run, call.tool
        assert tool is not None
        try:
            plan = svc.windows.plan(tool.name, tool_policy.windows, activation)
        except WindowKeyError as exc:
            call.decision = svc.policy.refuse(
                f"window:{exc.window}", f"{exc}; failing closed"
            )
            self._record(call)
            return False
        if svc.pii is not None:
            # stored (and locked) under its token: a window keyed on a customer's e-mail
            # still counts across calls, and the store never holds the address
            pii = svc.pii
            plan.groups = {n: pii.redact_text(run.tenant, g) for n, g in plan.groups.items()}
            # count_distinct items are a plain SHA-256 of the value: keyed, they cannot be
            # matched against a guessed address
            plan.entries = {
                n: (value, None if item is None else pii.token(run.tenant, "item", item))
                for n, (value, item) in plan.entries.items()
            }
        now = svc.clock()
        recorded = False
        with svc.ledger.transaction() as conn:
            svc.store.lock(conn, *svc.windows.lock_keys(run.tenant, plan))
            call.windows.update(
                svc.windows.compute(conn, run.tenant, tool_policy.windows, plan, now)
            )
            decision = svc.policy.decide(tool_policy, tool.effect, run.tier, activation)
            if decision.effect is not Effect.DENY and plan.entries:
                svc.windows.record(conn, run.tenant, plan, call.action_id, now)
                recorded = True
            call.decision = decision
            self._record(call)
        return recorded

    def _record(self, call: Call) -> None:
        decision = call.decision
        assert decision is not None
        run = call.run
        if decision.risk > run.risk:
            run.risk = decision.risk
        payload = {"action_id": call.action_id, **decision.to_json()}
        if call.windows:
            payload["window"] = call.windows
        if call.provenance.get("untrusted_args") or call.provenance.get("sensitive_args"):
            payload["provenance"] = call.provenance
        self.svc.emit(run.run_id, run.tenant, "decision", payload)

    async def _facts(
        self, call: Call, names: frozenset[str], activation: dict[str, Any]
    ) -> Result | None:
        svc = self.svc
        spec_facts = svc.loaded.spec.facts
        # Chained facts: each after the facts its arguments use.
        for name in (n for n in svc.policy.fact_order if n in names):
            fact = spec_facts[name]
            tool = svc.registry.get(fact.tool)
            assert tool is not None
            detail: str | None = None
            try:
                fact_args = {
                    k: e.evaluate(activation) for k, e in svc.policy.fact_args[name].items()
                }
                kwargs = tool.input.validate(fact_args) if tool.input else fact_args
                budget = tool.retry.max_attempts  # a read: its own retries, not the run's
                outcome = await svc.executor.run(call.run.tenant, tool, kwargs, retry_budget=budget)
                if outcome.ok:
                    value = outcome.value
                    if outcome.redactor is not None:
                        value = outcome.redactor.redact(to_jsonable(value))
                    call.facts[name] = (
                        tool.output.validate(value) if tool.output else to_jsonable(value)
                    )
                else:
                    detail = f"{outcome.kind}: {outcome.detail}"
            except (CelError, SchemaViolation) as exc:
                detail = f"{type(exc).__name__}: {exc}"
            if detail is not None:
                detail = f"fact {name!r} ({fact.tool}) could not be looked up: {detail}"
                svc.emit(
                    call.run.run_id,
                    call.run.tenant,
                    "facts",
                    {"action_id": call.action_id, "facts": call.facts, "error": detail},
                )
                return Denied(
                    FailureKind.FACT_ERROR, (detail + "; failing closed",), call.action_id
                )
        svc.emit(
            call.run.run_id,
            call.run.tenant,
            "facts",
            {"action_id": call.action_id, "facts": call.facts},
        )
        return None


def _ended_without_effect(call: Call, result: Result) -> bool:
    if isinstance(result, Allowed | Pending):
        return False
    if isinstance(result, Failed | Drafted | Denied):
        return not (isinstance(result, Failed) and call.effect_possible)
    return True  # pragma: no cover - Result is closed
