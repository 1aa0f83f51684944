"""The outermost stage: the call's request and its one terminal event on the ledger."""

from __future__ import annotations

import time
from typing import Any

from warden.errors import InvalidInputError
from warden.events import EventKind
from warden.ledger import to_jsonable
from warden.pipeline._call import Call
from warden.pipeline._services import Services
from warden.pipeline.stages._base import Next
from warden.results import Allowed, Denied, Drafted, Failed, FailureKind, Pending, Result


def _unrecordable(call: Call, exc: InvalidInputError) -> Failed:
    return Failed(
        FailureKind.OUTPUT_SCHEMA_ERROR,
        f"a value this call produced cannot be recorded: {exc}",
        call.action_id,
    )


class RecordStage:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call, next: Next) -> Result:
        run, svc = call.run, self.svc
        if call.approval is None:
            raw = call.raw_args if isinstance(call.raw_args, dict) else to_jsonable(call.raw_args)
            # The ledger canonicalises the event as it takes it: arguments it cannot record
            # (a lone surrogate) raise InvalidInputError here, naming where, before the
            # call is counted or anything else happens: the caller's error, this call alone.
            requested: dict[str, Any] = {
                "action_id": call.action_id,
                "tool": call.tool_name,
                "args": raw,
                "step": run.steps + 1,
                "idempotency_key": call.given_key,
                "proposed_by": call.proposer,
            }
            if call.confidence is not None:
                requested["confidence"] = call.confidence
            if call.rationale is not None:
                requested["rationale"] = call.rationale
            svc.emit(run.run_id, run.tenant, "action_requested", requested)
            run.steps += 1
            run.counts[call.tool_name] = run.counts.get(call.tool_name, 0) + 1
        else:
            svc.emit(
                run.run_id,
                run.tenant,
                "action_resumed",
                {
                    "action_id": call.action_id,
                    "approval_id": call.approval.approval_id,
                    "by": call.actor,
                },
            )
        call.started = time.perf_counter()
        try:
            result = await next(call)
        except InvalidInputError as exc:  # a value the call produced (a fact) is unrecordable
            result = _unrecordable(call, exc)
        try:
            self.outcome(call, result)
        except InvalidInputError as exc:  # its output is: the effect, if any, is recorded so
            result = _unrecordable(call, exc)
            self.outcome(call, result)
        return result

    def outcome(self, call: Call, result: Result) -> None:
        ms = round((time.perf_counter() - call.started) * 1000, 3)
        payload: dict[str, Any] = {"action_id": call.action_id}
        kind: EventKind
        match result:
            case Allowed():
                kind = "executed"
                payload.update(
                    result=result.result, attempts=call.attempts, ms=ms, replayed=result.replayed
                )
                if call.cost is not None:
                    payload["cost_usd"] = str(call.cost)
                elif call.cost_problem is not None:
                    payload.update(cost_usd=None, cost_problem=call.cost_problem)
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
                return  # approval_requested is already on the ledger
        self.svc.emit(call.run.run_id, call.run.tenant, kind, payload)
