"""Deciding approvals: who may decide, edits re-checked against the policy, timeouts.

``Gateway.approve`` / ``reject`` / ``expire_overdue`` delegate here. Deciding needs the
approval's current role; neither the action's proposer nor its run's opener may decide it
(separation of duties); a bridge key names the human it decides for (``on_behalf_of``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from warden import notify
from warden.approvals import ApprovalRecord
from warden.errors import ForbiddenError, UsageError
from warden.pipeline._call import Call, RunState
from warden.pipeline._services import Services
from warden.pipeline.stages import PolicyStage, plain
from warden.results import Denied, FailureKind
from warden.store._tables import runs
from warden.telemetry._redact import stored_identity
from warden.tools import SchemaViolation


class ApprovalDesk:
    def __init__(self, svc: Services, *, load_run: Callable[[str], RunState]) -> None:
        self.svc = svc
        self._load_run = load_run

    async def approve(
        self,
        approval_id: str,
        *,
        approver: str,
        rationale: str,
        args: dict[str, Any] | None = None,
        roles: Iterable[str] = (),
        on_behalf_of: str | None = None,
    ) -> ApprovalRecord:
        """Approve a pending action, or approve it with edited ``args``.

        ``roles``: the approval roles ``approver`` holds; deciding needs the approval's
        current role (``ForbiddenError`` otherwise). Whoever proposed the action or opened
        its run cannot decide it. ``on_behalf_of``: the human a bridge (chat, e-mail)
        decides for; recorded, and held to the same separation of duties.

        Edited args are re-validated against the tool's schema and re-evaluated against the
        policy (facts and windows included) before the approval is recorded; if the policy
        denies the edited action, the approval stays pending and ``UsageError`` says why.
        """
        record = self._pending(approval_id, approver, roles, on_behalf_of)
        who = (approver, on_behalf_of)
        if args is None:
            return self._decide(record, "approved", who, rationale, record.args, None)
        tool = self.svc.registry.get(record.tool)
        if tool is None:
            raise UsageError(f"tool {record.tool!r} is no longer bound")
        try:
            kwargs = tool.input.validate(args) if tool.input else args
        except SchemaViolation as exc:
            raise UsageError(f"edited args do not fit {record.tool!r}: {exc}") from None
        call = Call(self._load_run(record.run_id), record.tool, args, record.action_id)
        call.tool, call.kwargs, call.args = tool, kwargs, plain(kwargs)
        # Release this action's own window entries so it is not counted against itself;
        # the policy stage records them again, with the edited args, if it does not deny.
        with self.svc.ledger.transaction() as conn:
            self.svc.windows.void(conn, record.action_id)
        denied, _ = await PolicyStage(self.svc).evaluate(call)
        if denied is not None:
            original = Call(call.run, record.tool, record.args, record.action_id)
            original.tool, original.args = tool, record.args
            await PolicyStage(self.svc).evaluate(original)
            reasons = denied.reasons if isinstance(denied, Denied) else ()
            raise UsageError("the edited action is denied by policy: " + "; ".join(reasons))
        assert call.decision is not None
        return self._decide(record, "approved", who, rationale, call.args, call.decision.to_json())

    async def reject(
        self,
        approval_id: str,
        *,
        approver: str,
        rationale: str,
        roles: Iterable[str] = (),
        on_behalf_of: str | None = None,
    ) -> ApprovalRecord:
        """Reject a pending action (the same rules as ``approve`` on who may decide)."""
        record = self._pending(approval_id, approver, roles, on_behalf_of)
        return self._decide(
            record, "rejected", (approver, on_behalf_of), rationale, record.args, None
        )

    def _pending(
        self, approval_id: str, approver: str, roles: Iterable[str], on_behalf_of: str | None
    ) -> ApprovalRecord:
        if not approver.strip():
            raise UsageError("a decision needs the approver's identity")
        if on_behalf_of is not None and not on_behalf_of.strip():
            raise UsageError("on_behalf_of, when given, names the human who decides")
        record = self.svc.approvals.get(approval_id)
        if record.state != "pending":
            raise UsageError(f"approval {approval_id} is {record.state}, not pending")
        held = sorted(set(roles))
        if record.role not in held:
            raise ForbiddenError(
                f"approval {approval_id} needs the approval role {record.role!r}; "
                f"{approver!r} holds {', '.join(map(repr, held)) or 'no approval role'}"
            )
        with self.svc.store.read() as conn:
            opener = conn.execute(
                select(runs.c.opened_by, runs.c.agent).where(runs.c.run_id == record.run_id)
            ).first()
        barred = {record.requested_by, *(opener or ())} - {None}
        for who in (approver, on_behalf_of):
            # the run's row holds who opened it tokenized where it is PII
            if who is not None and (
                who in barred or stored_identity(self.svc.pii, record.tenant, who) in barred
            ):
                raise UsageError(
                    f"{who!r} proposed this action or opened its run and cannot approve it "
                    "(separation of duties)"
                )
        return record

    def _decide(
        self,
        record: ApprovalRecord,
        state: str,
        who: tuple[str, str | None],
        rationale: str,
        args: dict[str, Any],
        decision: dict[str, Any] | None,
    ) -> ApprovalRecord:
        approver, on_behalf_of = who
        now = self.svc.clock()
        pii = self.svc.pii
        # an approver named by an e-mail address is PII too: the column holds its token
        decided_by = approver if pii is None else pii.redact_text(record.tenant, approver)
        with self.svc.ledger.transaction() as conn:
            won = self.svc.approvals.transition(
                conn,
                record.approval_id,
                "pending",
                state=state,
                decided_by=decided_by,
                decided_at=now,
                rationale=rationale,
                args=args,
            )
            if not won:
                raise UsageError(f"approval {record.approval_id} was decided by someone else first")
            payload: dict[str, Any] = {
                "approval_id": record.approval_id,
                "action_id": record.action_id,
                "decision": "edited" if args != record.args else state,
                "approver": approver,
                "rationale": rationale,
                "role": record.role,
            }
            if on_behalf_of is not None:
                payload["on_behalf_of"] = on_behalf_of
            if args != record.args:
                payload.update(args=args, policy=decision)
            self.svc.emit(record.run_id, record.tenant, "approval_decided", payload, conn)
            if state == "rejected":
                self.svc.windows.void(conn, record.action_id)
                self.svc.emit(
                    record.run_id,
                    record.tenant,
                    "denied",
                    {
                        "action_id": record.action_id,
                        "kind": FailureKind.APPROVAL_REJECTED.value,
                        "reasons": [rationale],
                        "rules": [],
                    },
                )
        return self.svc.approvals.get(record.approval_id)

    def expire_overdue(self) -> list[ApprovalRecord]:
        """Apply the workflow's timeout fallback to approvals past their deadline."""
        esc = self.svc.loaded.spec.escalation
        now = self.svc.clock()
        changed = []
        overdue: list[ApprovalRecord] = self.svc.approvals.overdue(now)
        for record in overdue:
            with self.svc.ledger.transaction() as conn:
                nxt = record.escalation_level + 1
                if esc.on_timeout == "escalate" and nxt < len(esc.approver_roles):
                    won = self.svc.approvals.transition(
                        conn,
                        record.approval_id,
                        "pending",
                        role=esc.approver_roles[nxt],
                        escalation_level=nxt,
                        deadline=now + esc.sla_for(record.sla_class),
                    )
                    if won:
                        _sla_breach(conn, record, now, f"escalated to {esc.approver_roles[nxt]}")
                        self.svc.emit(
                            record.run_id,
                            record.tenant,
                            "approval_escalated",
                            {
                                "approval_id": record.approval_id,
                                "action_id": record.action_id,
                                "from_role": record.role,
                                "to_role": esc.approver_roles[nxt],
                                "deadline": now + esc.sla_for(record.sla_class),
                            },
                        )
                else:
                    won = self.svc.approvals.transition(
                        conn,
                        record.approval_id,
                        "pending",
                        state="expired",
                        decided_at=now,
                        decided_by="warden",
                        rationale=f"no decision by {record.deadline:%Y-%m-%d %H:%M}Z",
                    )
                    if won:
                        _sla_breach(conn, record, now, "expired: the action is denied")
                        self.svc.windows.void(conn, record.action_id)
                        self.svc.emit(
                            record.run_id,
                            record.tenant,
                            "approval_expired",
                            {
                                "approval_id": record.approval_id,
                                "action_id": record.action_id,
                            },
                        )
                        self.svc.emit(
                            record.run_id,
                            record.tenant,
                            "denied",
                            {
                                "action_id": record.action_id,
                                "kind": FailureKind.APPROVAL_TIMEOUT.value,
                                "reasons": ["approval deadline passed"],
                                "rules": [],
                            },
                        )
            if won:
                changed.append(self.svc.approvals.get(record.approval_id))
        return changed


def _sla_breach(conn: Any, record: ApprovalRecord, now: datetime, outcome: str) -> None:
    notify.enqueue(
        conn,
        tenant=record.tenant,
        kind="sla_breach",
        now=now,
        payload={
            "approval_id": record.approval_id,
            "workflow": record.workflow,
            "run_id": record.run_id,
            "tool": record.tool,
            "role": record.role,
            "deadline": record.deadline.isoformat(),
            "outcome": outcome,
        },
    )
