"""The governed call: the one place that knows the order of the stages.

    switches → caps → tool → identity → schema → replay → policy → approval
             → draft → intent → execute → verify → record

Every call ends in exactly one terminal ledger event (executed, drafted, denied, failed,
or approval_requested), whatever stage ended it.
"""

from __future__ import annotations

import time
from typing import Any

from warden.ledger import to_jsonable
from warden.pipeline import _idempotency as idem
from warden.pipeline._call import Call
from warden.pipeline._services import Services
from warden.pipeline._stages import (
    ApprovalStage,
    CapsStage,
    DraftStage,
    ExecuteStage,
    IdentityStage,
    IntentStage,
    PolicyStage,
    ReplayStage,
    SchemaStage,
    Stage,
    SwitchStage,
    ToolStage,
    VerifyStage,
)
from warden.results import Allowed, Denied, Drafted, Failed, FailureKind, Pending, Result

# Failures after which the tool may have had its effect: its key stays claimed.
_EFFECT_UNKNOWN = {FailureKind.TIMEOUT, FailureKind.OUTPUT_SCHEMA_ERROR}


class Pipeline:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.decide: list[Stage] = [
            SwitchStage(svc),
            CapsStage(svc),
            ToolStage(svc),
            IdentityStage(),
            SchemaStage(),
            ReplayStage(svc),
            PolicyStage(svc),
            ApprovalStage(svc),
        ]
        self.act: list[Stage] = [
            DraftStage(svc),
            IntentStage(svc),
            ExecuteStage(svc),
            VerifyStage(svc),
        ]

    async def call(self, call: Call) -> Result:
        run = call.run
        run.steps += 1
        run.counts[call.tool_name] = run.counts.get(call.tool_name, 0) + 1
        call.started = time.perf_counter()
        self.svc.record(
            run.run_id,
            run.tenant,
            "action_requested",
            {
                "action_id": call.action_id,
                "tool": call.tool_name,
                "args": call.raw_args
                if isinstance(call.raw_args, dict)
                else to_jsonable(call.raw_args),
                "step": run.steps,
                "idempotency_key": call.given_key,
            },
        )
        for stage in self.decide:
            result = await stage(call)
            if result is not None:
                return self.finish(call, result)
        return await self.act_on(call)

    async def act_on(self, call: Call) -> Result:
        """The stages after the decision; also the entry for an approved action."""
        for stage in self.act:
            result = await stage(call)
            if result is not None:
                return self.finish(call, result)
        raise AssertionError("VerifyStage always returns a result")  # pragma: no cover

    def finish(self, call: Call, result: Result) -> Result:
        """Record the outcome and settle what the call reserved."""
        svc, run = self.svc, call.run
        ms = round((time.perf_counter() - call.started) * 1000, 3)
        payload: dict[str, Any] = {"action_id": call.action_id}
        match result:
            case Allowed():
                kind = "executed"
                payload.update(
                    result=result.result, attempts=call.attempts, ms=ms, replayed=result.replayed
                )
            case Drafted():
                kind = "drafted"
                payload.update(tool=result.tool, args=result.args)
            case Denied():
                kind = "denied"
                payload.update(
                    kind=result.kind.value, reasons=list(result.reasons), rules=list(result.rules)
                )
            case Failed():
                kind = "failed"
                payload.update(
                    kind=result.kind.value,
                    detail=result.detail,
                    errors=[e.to_json() for e in result.errors],
                    attempts=call.attempts,
                )
            case Pending():
                return result  # approval_requested is already on the ledger
        release_window = (
            call.windows_recorded
            and not isinstance(result, Allowed)
            and not (isinstance(result, Failed) and result.kind in _EFFECT_UNKNOWN)
        )
        settle_key = call.intent_recorded and not (isinstance(result, Allowed) and result.replayed)
        if not (release_window or settle_key or call.approval_id):
            svc.record(run.run_id, run.tenant, kind, payload)
            return result
        # Writes: the outcome, the idempotency record and the approval state commit together.
        # Not fsynced: the intent already is, so a power cut here leaves a visible "intent
        # without outcome" and a key still "started" (repeats are refused, not re-run).
        with svc.ledger.transaction(durable=False) as conn:
            svc.record(run.run_id, run.tenant, kind, payload)
            if release_window:
                svc.windows.void(conn, call.action_id)
            if settle_key:
                assert call.key is not None
                if isinstance(result, Allowed):
                    idem.settle_done(conn, run.tenant, call.key, result.result)
                elif isinstance(result, Failed) and result.kind in _EFFECT_UNKNOWN:
                    idem.settle_unknown(conn, run.tenant, call.key)
                else:
                    idem.release(conn, run.tenant, call.key)
            if call.approval_id:
                state = "executed" if isinstance(result, Allowed) else "failed"
                svc.approvals.transition(
                    conn,
                    call.approval_id,
                    "executing",
                    state=state,
                    result=result.result if isinstance(result, Allowed) else payload,
                )
        return result
