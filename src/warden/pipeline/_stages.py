"""The stages of the governed call, one small class each.

A stage receives the call, may fill in what it decided, and returns a final result to
stop the call or ``None`` to let it go on. Stages never call each other; only
``Pipeline`` knows their order.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any, Protocol

from warden import notify
from warden.errors import CelError
from warden.ledger import to_jsonable
from warden.pipeline import _idempotency as idem
from warden.pipeline._call import Call
from warden.pipeline._execute import ExecOutcome, execute, invoke
from warden.pipeline._services import Services
from warden.results import Allowed, Denied, Drafted, Failed, FailureKind, Pending, Result
from warden.secrets import Redactor, SecretError
from warden.spec import Effect, Tier
from warden.store import _fast as fast
from warden.store._tables import utc_text
from warden.tools import SchemaViolation


class Stage(Protocol):
    async def __call__(self, call: Call) -> Result | None: ...


_PLAIN = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """Validated arguments as plain data for rules (nested models become dicts)."""
    if isinstance(value, dict):
        if all(type(v) in _PLAIN for v in value.values()):
            return value
        return {k: plain(v) for k, v in value.items()}
    if type(value) in _PLAIN or isinstance(value, Decimal):
        return value
    return to_jsonable(value)


class SwitchStage:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call) -> Result | None:
        switch = self.svc.switches.blocking(call.run.tenant, self.svc.workflow, call.tool_name)
        if switch is None:
            return None
        return Denied(FailureKind.KILLED, (switch.describe(),), call.action_id)


class CapsStage:
    """Run caps: max steps; the same call N times in a row stops the run as a runaway."""

    def __init__(self, svc: Services) -> None:
        self.limits = svc.loaded.spec.limits

    async def __call__(self, call: Call) -> Result | None:
        run = call.run
        if run.stopped:
            return Denied(FailureKind.RUNAWAY, (run.stopped,), call.action_id)
        if run.steps > self.limits.max_steps:
            run.stopped = f"the run reached max_steps ({self.limits.max_steps}) and was stopped"
            return Denied(FailureKind.MAX_STEPS, (run.stopped,), call.action_id)
        if call.tool_name == run.last_tool and call.raw_args == run.last_args:
            run.repeats += 1
        else:
            run.last_tool, run.last_args, run.repeats = call.tool_name, _copy(call.raw_args), 1
        if run.repeats >= self.limits.max_identical_calls:
            run.stopped = (
                f"{call.tool_name!r} was called {run.repeats} times in a row with the same "
                "arguments: runaway loop, run stopped"
            )
            return Denied(FailureKind.RUNAWAY, (run.stopped,), call.action_id)
        return None


def _copy(args: Any) -> Any:
    return dict(args) if isinstance(args, dict) else args


class ToolStage:
    """A tool the workflow does not have is a hallucination: denied, never an exception."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call) -> Result | None:
        tool = self.svc.registry.get(call.tool_name)
        if tool is None:
            return Denied(
                FailureKind.UNKNOWN_TOOL,
                (
                    f"no tool {call.tool_name!r} in workflow {self.svc.workflow!r}; "
                    f"available: {', '.join(self.svc.registry.names())}",
                ),
                call.action_id,
            )
        call.tool = tool
        return None


class IdentityStage:
    """The agent's principal must hold the tool's scope; the task type must allow the tool."""

    async def __call__(self, call: Call) -> Result | None:
        tool, run = call.tool, call.run
        assert tool is not None
        if tool.scope is not None and tool.scope not in run.scopes:
            return Denied(
                FailureKind.SCOPE_DENIED,
                (f"agent {run.agent!r} lacks scope {tool.scope!r} needed by {tool.name!r}",),
                call.action_id,
            )
        if run.allowed_tools is not None and tool.name not in run.allowed_tools:
            return Denied(
                FailureKind.POLICY_BLOCK,
                (f"task type {run.task_type!r} does not allow tool {tool.name!r}",),
                call.action_id,
                ("task_type",),
            )
        return None


class SchemaStage:
    async def __call__(self, call: Call) -> Result | None:
        tool = call.tool
        assert tool is not None
        raw = call.raw_args if call.raw_args is not None else {}
        if not isinstance(raw, dict):
            return Failed(
                FailureKind.SCHEMA_ERROR,
                f"arguments must be an object, got {type(raw).__name__}",
                call.action_id,
            )
        if tool.input is None:
            call.kwargs = raw
        else:
            try:
                call.kwargs = tool.input.validate(raw)
            except SchemaViolation as exc:
                return Failed(FailureKind.SCHEMA_ERROR, str(exc), call.action_id, tuple(exc.errors))
        call.args = plain(call.kwargs)
        return None


class ReplayStage:
    """A write repeated with the same idempotency key returns the first result."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call) -> Result | None:
        tool = call.tool
        assert tool is not None
        if not tool.effect.is_write:
            return None
        call.key = call.given_key or idem.derive_key(call.run.run_id, tool.name, call.args)
        found = idem.peek(self.svc.store.engine, call.run.tenant, call.key)
        return None if found is None else replay_result(call, found)


def replay_result(call: Call, found: idem.KeyRecord) -> Result:
    state, result, first_action = found.state, found.result, found.action_id
    if state == "done":
        return Allowed(
            None if result is None else json.loads(result), call.action_id, replayed=True
        )
    if state == "started":
        return Failed(
            FailureKind.IN_PROGRESS,
            f"action {first_action} with this idempotency key is executing, or stopped between "
            "intent and outcome; not executing it again",
            call.action_id,
        )
    return Failed(
        FailureKind.OUTCOME_UNKNOWN,
        f"action {first_action} with this idempotency key may have had its effect "
        "(timeout or bad output); not executing it again",
        call.action_id,
    )


class PolicyStage:
    """Facts, windows and provenance into one decision; windowed decisions are atomic."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call) -> Result | None:
        svc, run, tool = self.svc, call.run, call.tool
        assert tool is not None
        tool_policy = svc.policy.for_tool(tool.name)
        activation: dict[str, Any] = {
            "tool": svc.tool_contexts[tool.name],
            "args": call.args,
            "principal": run.principal,
            "tenant": run.tenant,
            "run": run.context(),
            "provenance": run.provenance.tag(call.args),
            "window": call.windows,
            "facts": call.facts,
        }
        call.provenance = activation["provenance"]
        if tool_policy.facts:
            failure = await self._facts(call, tool_policy.facts, activation)
            if failure is not None:
                return failure
        recorded = svc.windows.recorded_by(tool.name)
        if tool_policy.windows or recorded:
            now = svc.clock()
            with svc.ledger.transaction() as conn:
                svc.store.lock(
                    conn,
                    *svc.windows.lock_keys(
                        run.tenant, {*tool_policy.windows, *recorded}, call.args
                    ),
                )
                call.windows.update(
                    svc.windows.compute(conn, run.tenant, tool_policy.windows, call.args, now)
                )
                decision = svc.policy.decide(tool_policy, tool.effect, run.tier, activation)
                if decision.effect is not Effect.DENY and recorded:
                    svc.windows.record(conn, run.tenant, tool.name, call.args, call.action_id, now)
                    call.windows_recorded = True
                call.decision = decision
                self._record(call)
        else:
            call.decision = svc.policy.decide(tool_policy, tool.effect, run.tier, activation)
            self._record(call)
        decision = call.decision
        if decision.effect is Effect.DENY:
            return Denied(
                FailureKind.POLICY_BLOCK, decision.reasons, call.action_id, decision.rules
            )
        return None

    def _record(self, call: Call) -> None:
        assert call.decision is not None
        payload = {"action_id": call.action_id, **call.decision.to_json()}
        if call.windows:
            payload["window"] = call.windows
        if call.provenance.get("untrusted_args"):
            payload["provenance"] = call.provenance
        self.svc.record(call.run.run_id, call.run.tenant, "decision", payload)

    async def _facts(
        self, call: Call, names: frozenset[str], activation: dict[str, Any]
    ) -> Result | None:
        svc = self.svc
        spec_facts = svc.loaded.spec.facts
        for name in sorted(names):
            fact = spec_facts[name]
            tool = svc.registry.get(fact.tool)
            assert tool is not None
            try:
                fact_args = {
                    k: e.evaluate(activation) for k, e in svc.policy.fact_args[name].items()
                }
                kwargs = tool.input.validate(fact_args) if tool.input else fact_args
                value = await invoke(tool, kwargs)
                call.facts[name] = (
                    tool.output.validate(value) if tool.output else to_jsonable(value)
                )
            except (CelError, SchemaViolation, TimeoutError, Exception) as exc:
                detail = f"fact {name!r} ({fact.tool}) could not be looked up: {type(exc).__name__}: {exc}"
                svc.record(
                    call.run.run_id,
                    call.run.tenant,
                    "facts",
                    {"action_id": call.action_id, "facts": call.facts, "error": detail},
                )
                return Denied(
                    FailureKind.FACT_ERROR, (detail + "; failing closed",), call.action_id
                )
        svc.record(
            call.run.run_id,
            call.run.tenant,
            "facts",
            {"action_id": call.action_id, "facts": call.facts},
        )
        return None


class ApprovalStage:
    """require_approval / escalate become a pending approval in the store."""

    POLL_S = 0.05

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call) -> Result | None:
        decision, tool, run = call.decision, call.tool, call.run
        assert decision is not None and tool is not None
        if decision.effect not in (Effect.REQUIRE_APPROVAL, Effect.ESCALATE):
            return None
        svc = self.svc
        chain = svc.loaded.spec.escalation.approver_roles
        level = 0 if decision.effect is Effect.REQUIRE_APPROVAL else min(1, len(chain) - 1)
        role = decision.approvers or chain[level]
        now = svc.clock()
        deadline = now + svc.loaded.spec.escalation.sla_for(decision.sla_class)
        approval_id = "apr_" + uuid.uuid4().hex[:20]
        key = call.key or idem.derive_key(run.run_id, tool.name, call.args)
        evidence = {"facts": call.facts, "window": call.windows, "provenance": call.provenance}
        with svc.ledger.transaction() as conn:
            refused = self._over_limit(conn, call, now)
            if refused is not None:
                return Denied(FailureKind.APPROVAL_LIMIT, (refused,), call.action_id)
            svc.approvals.create(
                conn,
                approval_id=approval_id,
                tenant=run.tenant,
                run_id=run.run_id,
                action_id=call.action_id,
                workflow=svc.workflow,
                tool=tool.name,
                args=call.args,
                idempotency_key=key,
                reasons=list(decision.reasons),
                rules=list(decision.rules),
                evidence=evidence,
                risk=decision.risk,
                role=role,
                sla_class=decision.sla_class,
                escalation_level=level,
                requested_by=run.requested_by,
                created_at=now,
                deadline=deadline,
            )
            svc.record(
                run.run_id,
                run.tenant,
                "approval_requested",
                {
                    "action_id": call.action_id,
                    "approval_id": approval_id,
                    "role": role,
                    "sla_class": decision.sla_class,
                    "deadline": deadline,
                    "reasons": list(decision.reasons),
                    "risk": decision.risk,
                },
            )
            # The notification commits with the approval, or not at all (outbox).
            notify.enqueue(
                conn,
                tenant=run.tenant,
                kind="approval_requested",
                now=now,
                payload={
                    "approval_id": approval_id,
                    "workflow": svc.workflow,
                    "run_id": run.run_id,
                    "tool": tool.name,
                    "args": call.args,
                    "role": role,
                    "sla_class": decision.sla_class,
                    "deadline": utc_text(deadline),
                    "risk": decision.risk,
                    "reasons": list(decision.reasons),
                },
            )
        call.approval_id = approval_id
        pending = Pending(approval_id, call.action_id, role, deadline, decision.reasons)
        if not call.wait_s:
            return pending
        return await wait_for_decision(svc, call, pending, call.wait_s, self.POLL_S)

    def _over_limit(self, conn: Any, call: Call, now: Any) -> str | None:
        esc = self.svc.loaded.spec.escalation
        store = self.svc.store
        store.lock(conn, f"approvals:{call.run.run_id}", f"approvals-user:{call.run.end_user}")
        per_run = fast.fetch_one(
            conn, "SELECT count(*) FROM approvals WHERE run_id = ?", (call.run.run_id,)
        )
        if per_run is not None and per_run[0] >= esc.max_requests_per_run:
            return f"this run already asked for {per_run[0]} approvals (max_requests_per_run)"
        if call.run.end_user is None:
            return None
        since = utc_text(now - timedelta(days=1))
        per_user = fast.fetch_one(
            conn,
            "SELECT count(*) FROM approvals a JOIN runs r ON r.run_id = a.run_id"
            " WHERE r.end_user = ? AND r.tenant = ? AND a.created_at >= ?",
            (call.run.end_user, call.run.tenant, since),
        )
        if per_user is not None and per_user[0] >= esc.max_requests_per_end_user_per_day:
            return (
                f"end user {call.run.end_user!r} caused {per_user[0]} approval requests in 24 h "
                "(max_requests_per_end_user_per_day)"
            )
        return None


async def wait_for_decision(
    svc: Services, call: Call, pending: Pending, wait_s: float, poll_s: float
) -> Result | None:
    """Poll the store until the approval is decided or ``wait_s`` passes.

    Returns None when this call won the right to execute the approved action (its
    approved, possibly edited, arguments are then in ``call``).
    """
    loop = asyncio.get_running_loop()
    until = loop.time() + wait_s
    while True:
        record = svc.approvals.get(pending.approval_id)
        if record.state == "approved":
            with svc.ledger.transaction() as conn:
                won = svc.approvals.transition(
                    conn, record.approval_id, "approved", state="executing"
                )
            if won:
                adopt_approved_args(call, record.args, record.idempotency_key)
                return None
            continue  # someone else claimed it in between; read the new state
        if record.state == "rejected":
            return Denied(
                FailureKind.APPROVAL_REJECTED, (record.rationale or "rejected",), call.action_id
            )
        if record.state == "expired":
            return Denied(
                FailureKind.APPROVAL_TIMEOUT, (record.rationale or "expired",), call.action_id
            )
        if record.state == "executed":
            return Allowed(record.result, call.action_id, replayed=True)
        if loop.time() >= until:
            return pending
        await asyncio.sleep(poll_s)


def adopt_approved_args(call: Call, args: dict[str, Any], key: str) -> None:
    """Execute exactly what was approved (an approver may have edited the arguments)."""
    assert call.tool is not None
    call.kwargs = call.tool.input.validate(args) if call.tool.input else args
    call.args = plain(call.kwargs)
    call.key = key


class DraftStage:
    """Draft tier: writes are recorded as what would have been sent, and not executed."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call) -> Result | None:
        tool = call.tool
        assert tool is not None
        if call.run.tier is Tier.DRAFT and tool.effect.is_write:
            return Drafted(call.action_id, tool.name, call.args)
        return None


class IntentStage:
    """Before a write runs: claim its idempotency key and make the intent durable."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call) -> Result | None:
        tool, run, svc = call.tool, call.run, self.svc
        assert tool is not None
        if not tool.effect.is_write:
            return None
        call.key = call.key or call.given_key or idem.derive_key(run.run_id, tool.name, call.args)
        with svc.ledger.transaction() as conn:
            claimed = idem.claim(
                conn,
                tenant=run.tenant,
                key=call.key,
                run_id=run.run_id,
                action_id=call.action_id,
                tool=tool.name,
                now=svc.clock(),
            )
            if not claimed:
                found = idem.lookup(conn, run.tenant, call.key)
                assert found is not None
                return replay_result(call, found)
            svc.record(
                run.run_id,
                run.tenant,
                "intent",
                {
                    "action_id": call.action_id,
                    "tool": tool.name,
                    "args": call.args,
                    "idempotency_key": call.key,
                },
            )
        call.intent_recorded = True
        return None


class ExecuteStage:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call) -> Result | None:
        tool, run, svc = call.tool, call.run, self.svc
        assert tool is not None
        used = run.retries.get(tool.name, 0)
        budget = max(0, svc.loaded.spec.limits.max_retries_per_tool - used)
        kwargs = call.kwargs
        if tool.credential_param and tool.credential:
            # Minted here, for this call only: the agent never sees it, the ledger never
            # records it, and anything the tool echoes back is scrubbed.
            try:
                secret = svc.secrets.mint(
                    tool.credential, ttl=timedelta(seconds=max(60.0, tool.timeout_s * 2))
                )
            except SecretError as exc:
                return Failed(FailureKind.CREDENTIAL_ERROR, str(exc), call.action_id)
            call.redactor = Redactor()
            call.redactor.add(secret)
            kwargs = {**kwargs, tool.credential_param: secret}
        outcome: ExecOutcome = await execute(tool, kwargs, svc.breakers[tool.name], budget)
        if outcome.attempts > 1:
            run.retries[tool.name] = used + outcome.attempts - 1
        call.attempts = outcome.attempts
        call.effect_possible = outcome.effect_possible
        if not outcome.ok:
            assert outcome.kind is not None
            detail = call.redactor.redact_text(outcome.detail) if call.redactor else outcome.detail
            return Failed(outcome.kind, detail, call.action_id)
        call.output = outcome.value
        return None


class VerifyStage:
    """Output schema, then remember untrusted output for provenance."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call) -> Result | None:
        tool = call.tool
        assert tool is not None
        try:
            result = tool.output.validate(call.output) if tool.output else to_jsonable(call.output)
        except SchemaViolation as exc:
            if call.redactor:  # field errors could quote the credential: keep only the text
                detail = call.redactor.redact_text(str(exc))
                return Failed(FailureKind.OUTPUT_SCHEMA_ERROR, detail, call.action_id)
            return Failed(FailureKind.OUTPUT_SCHEMA_ERROR, str(exc), call.action_id, tuple(exc.errors))
        if call.redactor:
            result = call.redactor.redact(result)
        call.run.provenance.observe(tool.name, result, untrusted=tool.untrusted_output)
        return Allowed(result, call.action_id)


__all__ = [
    "ApprovalStage",
    "CapsStage",
    "DraftStage",
    "ExecuteStage",
    "IdentityStage",
    "IntentStage",
    "PolicyStage",
    "ReplayStage",
    "SchemaStage",
    "Stage",
    "SwitchStage",
    "ToolStage",
    "VerifyStage",
]
