"""require_approval / escalate become a pending approval; a resumed approval passes.

A new call that needs approval stops here with ``Pending``. A resumed call (the pipeline
re-entered at the top with an approved record) claims the approval for execution —
``approved → executing``, once, whoever calls first — passes on, and settles the approval
as ``executed`` or ``failed`` with what came back.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select

from warden.approvals import ApprovalRecord
from warden.approvals._queue import SHREDDED
from warden.pipeline import _idempotency as idem
from warden.pipeline._call import Call
from warden.pipeline._services import Services
from warden.pipeline.stages._base import Next
from warden.results import Allowed, Denied, Failed, FailureKind, Pending, Result
from warden.spec import Effect
from warden.store import _fast as fast
from warden.store._statements import Statement
from warden.store._tables import approvals, runs, utc_text
from warden.telemetry._redact import stored_identity

_PER_RUN = Statement(
    lambda _: (
        select(func.count()).select_from(approvals).where(approvals.c.run_id == bindparam("run_id"))
    )
)
_PER_USER = Statement(
    lambda _: (
        select(func.count())
        .select_from(approvals.join(runs, runs.c.run_id == approvals.c.run_id))
        .where(
            runs.c.end_user == bindparam("end_user"),
            runs.c.tenant == bindparam("tenant"),
            approvals.c.created_at >= bindparam("since"),
        )
    )
)


def outcome_of_approval(record: ApprovalRecord, action_id: str) -> Result | None:
    """What an approval that is not (or no longer) ``approved`` answers; None if approved."""
    match record.state:
        case "approved":
            return None
        case "pending":
            return Pending(
                record.approval_id,
                action_id,
                record.role,
                record.deadline,
                tuple(record.reasons),
                tuple(record.rules),
            )
        case "rejected":
            return Denied(
                FailureKind.APPROVAL_REJECTED, (record.rationale or "rejected",), action_id
            )
        case "expired":
            return Denied(FailureKind.APPROVAL_TIMEOUT, (record.rationale or "expired",), action_id)
        case "cancelled":
            return Denied(
                FailureKind.APPROVAL_CANCELLED, (record.rationale or "cancelled",), action_id
            )
        case "executed":
            return Allowed(record.result, action_id, replayed=True)
        case "executing":
            return Failed(
                FailureKind.IN_PROGRESS,
                f"approval {record.approval_id} is being executed by another caller",
                action_id,
            )
    result = record.result if isinstance(record.result, dict) else {}
    kind = result.get("kind", FailureKind.TOOL_ERROR.value)
    return Failed(
        FailureKind(kind) if kind in FailureKind.__members__.values() else FailureKind.TOOL_ERROR,
        str(result.get("detail") or f"the approved action {record.state}"),
        action_id,
    )


class ApprovalStage:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call, next: Next) -> Result:
        if call.approval is not None:
            return await self._resume(call, call.approval, next)
        decision = call.decision
        assert decision is not None
        if decision.effect not in (Effect.REQUIRE_APPROVAL, Effect.ESCALATE):
            return await next(call)
        return await asyncio.to_thread(self._request, call)

    # -- a resumed approval ---------------------------------------------------------

    async def _resume(self, call: Call, record: ApprovalRecord, next: Next) -> Result:
        approvals = self.svc.approvals

        def claim() -> bool:
            with self.svc.ledger.transaction() as conn:
                return approvals.transition(conn, record.approval_id, "approved", state="executing")

        if not await asyncio.to_thread(claim):
            now = await asyncio.to_thread(approvals.get, record.approval_id)
            answer = outcome_of_approval(now, call.action_id)
            return (
                answer
                if answer is not None
                else Failed(
                    FailureKind.IN_PROGRESS, "the approval changed state meanwhile", call.action_id
                )
            )
        if record.args == SHREDDED:
            # the tenant's vault key is gone and the arguments with it: fail closed, whatever
            # the tool's schema would accept
            result: Result = Failed(
                FailureKind.SCHEMA_ERROR,
                "the approved arguments cannot be read: the tenant's vault key was shredded",
                call.action_id,
            )
        else:
            try:
                result = await next(call)
            except BaseException as exc:
                await asyncio.to_thread(
                    self._settle, record, "failed", {"kind": "internal", "detail": repr(exc)}
                )
                raise
        if isinstance(result, Allowed):
            await asyncio.to_thread(self._settle, record, "executed", result.result)
        else:
            payload: dict[str, Any] = {"action_id": call.action_id}
            if isinstance(result, Failed | Denied):
                payload["kind"] = result.kind.value
                payload["detail"] = (
                    result.detail if isinstance(result, Failed) else "; ".join(result.reasons)
                )
            await asyncio.to_thread(self._settle, record, "failed", payload)
        return result

    def _settle(self, record: ApprovalRecord, state: str, result: Any) -> None:
        with self.svc.store.write(durable=False) as conn:
            self.svc.approvals.transition(
                conn, record.approval_id, "executing", state=state, result=result
            )

    # -- a new request --------------------------------------------------------------

    def _request(self, call: Call) -> Result:
        svc, decision, tool, run = self.svc, call.decision, call.tool, call.run
        assert decision is not None and tool is not None
        chain = svc.loaded.spec.escalation.approver_roles
        level = 0 if decision.effect is Effect.REQUIRE_APPROVAL else min(1, len(chain) - 1)
        role = decision.approvers or chain[level]
        now = svc.clock()
        deadline = now + svc.loaded.spec.escalation.sla_for(decision.sla_class)
        approval_id = "apr_" + uuid.uuid4().hex[:20]
        key = call.key or call.given_key or idem.derive_key(run.run_id, tool.name, call.args)
        evidence: dict[str, Any] = {
            "facts": call.facts,
            "window": call.windows,
            "provenance": call.provenance,
        }
        if call.rationale is not None:
            # the agent's own words, for the human deciding; stored with the arguments
            # (sealed with them under a vault), tokenized for readers who see tokens
            evidence["agent_rationale"] = call.rationale
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
                # stored tokenized where it is PII, as the run's opened_by is
                requested_by=stored_identity(svc.pii, run.tenant, call.proposer) or "",
                created_at=now,
                deadline=deadline,
            )
            # The ledger event and the webhook notification commit with the approval.
            svc.emit(
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
                    "proposed_by": call.proposer,
                    "tool": tool.name,
                    "args": call.args,
                },
                conn,
            )
        return Pending(
            approval_id, call.action_id, role, deadline, decision.reasons, decision.rules
        )

    def _over_limit(self, conn: Any, call: Call, now: datetime) -> str | None:
        esc = self.svc.loaded.spec.escalation
        store = self.svc.store
        end_user = stored_identity(self.svc.pii, call.run.tenant, call.run.end_user)
        store.lock(conn, f"approvals:{call.run.run_id}", f"approvals-user:{end_user}")
        per_run = fast.one(conn, _PER_RUN, {"run_id": call.run.run_id})
        if per_run is not None and per_run[0] >= esc.max_requests_per_run:
            return f"this run already asked for {per_run[0]} approvals (max_requests_per_run)"
        if call.run.end_user is None:
            return None
        since = utc_text(now - timedelta(days=1))
        per_user = fast.one(
            conn,
            _PER_USER,
            {"end_user": end_user, "tenant": call.run.tenant, "since": since},
        )
        if per_user is not None and per_user[0] >= esc.max_requests_per_end_user_per_day:
            return (
                f"end user {call.run.end_user!r} caused {per_user[0]} approval requests in 24 h "
                "(max_requests_per_end_user_per_day)"
            )
        return None
