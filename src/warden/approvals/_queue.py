"""The approval queue, in the store: pending actions survive restarts and are decided once.

Every state change is a conditional UPDATE on the current state (``WHERE state =
'pending'``), so two approvers, or two processes executing an approved action, cannot
both win.

States: pending → approved → executing → executed | failed
        pending → rejected | expired
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from warden.approvals._waiter import approval_changed
from warden.errors import NotFoundError
from warden.ledger import LedgerWriter, canonical_json
from warden.store import Store
from warden.store._tables import approvals


@dataclass(frozen=True)
class ApprovalRecord:
    approval_id: str
    tenant: str
    run_id: str
    action_id: str
    workflow: str
    tool: str
    args: dict[str, Any]
    idempotency_key: str
    reasons: list[str]
    rules: list[str]
    evidence: dict[str, Any]
    risk: float
    role: str
    sla_class: str | None
    escalation_level: int
    requested_by: str
    state: str
    created_at: datetime
    deadline: datetime
    decided_by: str | None
    decided_at: datetime | None
    rationale: str | None
    result: Any

    def to_json(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        for key in ("created_at", "deadline", "decided_at"):
            value = data[key]
            data[key] = None if value is None else value.isoformat()
        return data


def _record(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        approval_id=row["approval_id"],
        tenant=row["tenant"],
        run_id=row["run_id"],
        action_id=row["action_id"],
        workflow=row["workflow"],
        tool=row["tool"],
        args=json.loads(row["args"]),
        idempotency_key=row["idempotency_key"],
        reasons=json.loads(row["reasons"]),
        rules=json.loads(row["rules"]),
        evidence=json.loads(row["evidence"]),
        risk=row["risk"],
        role=row["role"],
        sla_class=row["sla_class"],
        escalation_level=row["escalation_level"],
        requested_by=row["requested_by"],
        state=row["state"],
        created_at=row["created_at"],
        deadline=row["deadline"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        rationale=row["rationale"],
        result=None if row["result"] is None else json.loads(row["result"]),
    )


class ApprovalQueue:
    def __init__(self, store: Store, ledger: LedgerWriter) -> None:
        self._store = store
        self._ledger = ledger

    def create(self, conn: Connection, **values: Any) -> None:
        for key in ("args", "reasons", "rules", "evidence"):
            values[key] = canonical_json(values[key])
        conn.execute(insert(approvals).values(state="pending", **values))

    def get(self, approval_id: str) -> ApprovalRecord:
        with self._store.read() as conn:
            row = (
                conn.execute(select(approvals).where(approvals.c.approval_id == approval_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"no approval {approval_id!r}")
        return _record(row)

    def list(
        self,
        *,
        tenant: str | None = None,
        state: str | None = None,
        role: str | None = None,
        sla_class: str | None = None,
        limit: int = 200,
        after: tuple[datetime, datetime, str] | None = None,
    ) -> list[ApprovalRecord]:
        """``after``: (deadline, created_at, approval_id) of the last record of the previous
        page (keyset pagination; the id breaks ties)."""
        # Soonest deadline first: an urgent SLA class comes before an older routine one.
        query = (
            select(approvals)
            .order_by(approvals.c.deadline, approvals.c.created_at, approvals.c.approval_id)
            .limit(limit)
        )
        if after is not None:
            d, c, i = after
            query = query.where(
                or_(
                    approvals.c.deadline > d,
                    and_(approvals.c.deadline == d, approvals.c.created_at > c),
                    and_(
                        approvals.c.deadline == d,
                        approvals.c.created_at == c,
                        approvals.c.approval_id > i,
                    ),
                )
            )
        if tenant is not None:
            query = query.where(approvals.c.tenant == tenant)
        if state is not None:
            query = query.where(approvals.c.state == state)
        if role is not None:
            query = query.where(approvals.c.role == role)
        if sla_class is not None:
            query = query.where(approvals.c.sla_class == sla_class)
        with self._store.read() as conn:
            return [_record(r) for r in conn.execute(query).mappings()]

    def overdue(self, now: datetime) -> builtins.list[ApprovalRecord]:
        with self._store.read() as conn:
            rows = conn.execute(
                select(approvals).where(approvals.c.state == "pending", approvals.c.deadline < now)
            ).mappings()
            return [_record(r) for r in rows]

    @staticmethod
    def transition(conn: Connection, approval_id: str, from_state: str, **values: Any) -> bool:
        """Move one approval out of ``from_state``; False if someone else moved it first."""
        if "args" in values:
            values["args"] = canonical_json(values["args"])
        if "result" in values:
            values["result"] = canonical_json(values["result"])
        done = conn.execute(
            update(approvals)
            .where(approvals.c.approval_id == approval_id, approvals.c.state == from_state)
            .values(**values)
        )
        if done.rowcount != 1:
            return False
        approval_changed(conn, approval_id)  # waits on it wake once this commits
        return True
