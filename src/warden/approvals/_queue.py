"""The approval queue, in the store: pending actions survive restarts and are decided once.

Every state change is a conditional UPDATE on the current state (``WHERE state =
'pending'``), so two approvers, or two processes executing an approved action, cannot
both win.

States: pending → approved → executing → executed | failed
        pending → rejected | expired

With a vault, the arguments, the evidence and the result are stored sealed with the
tenant's key (they hold the raw values the action runs with); records carry them open.
What a reader may see of them is the API's business (approvers see them raw, the read
recorded; others see tokens). A tenant whose key was shredded reads ``SHREDDED``.
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
from warden.telemetry import Vault, VaultError

#: what a sealed field reads as once its tenant's key is shredded
SHREDDED: dict[str, Any] = {"vault": "shredded: the tenant's key was destroyed"}
_SEALED = ("args", "evidence", "result")


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


def _open(vault: Vault | None, tenant: str, text: str | None) -> Any:
    if text is None:
        return None
    if vault is None:
        return json.loads(text)
    try:
        return json.loads(vault.unseal(tenant, text))
    except VaultError:
        return dict(SHREDDED)


def _record(row: Any, vault: Vault | None = None) -> ApprovalRecord:
    tenant = row["tenant"]
    return ApprovalRecord(
        approval_id=row["approval_id"],
        tenant=row["tenant"],
        run_id=row["run_id"],
        action_id=row["action_id"],
        workflow=row["workflow"],
        tool=row["tool"],
        args=_open(vault, tenant, row["args"]),
        idempotency_key=row["idempotency_key"],
        reasons=json.loads(row["reasons"]),
        rules=json.loads(row["rules"]),
        evidence=_open(vault, tenant, row["evidence"]),
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
        result=_open(vault, tenant, row["result"]),
    )


class ApprovalQueue:
    def __init__(self, store: Store, ledger: LedgerWriter, *, vault: Vault | None = None) -> None:
        self._store = store
        self._ledger = ledger
        self.vault = vault

    def _seal(self, tenant: str, value: Any) -> str:
        text = canonical_json(value)
        return text if self.vault is None else self.vault.seal(tenant, text)

    def create(self, conn: Connection, **values: Any) -> None:
        for key in ("reasons", "rules"):
            values[key] = canonical_json(values[key])
        for key in ("args", "evidence"):
            values[key] = self._seal(values["tenant"], values[key])
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
        return _record(row, self.vault)

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
            return [_record(r, self.vault) for r in conn.execute(query).mappings()]

    def overdue(self, now: datetime) -> builtins.list[ApprovalRecord]:
        with self._store.read() as conn:
            rows = conn.execute(
                select(approvals).where(approvals.c.state == "pending", approvals.c.deadline < now)
            ).mappings()
            return [_record(r, self.vault) for r in rows]

    def transition(self, conn: Connection, approval_id: str, from_state: str, **values: Any) -> bool:
        """Move one approval out of ``from_state``; False if someone else moved it first."""
        sealed = [key for key in _SEALED if key in values]
        if sealed:
            tenant = conn.execute(
                select(approvals.c.tenant).where(approvals.c.approval_id == approval_id)
            ).scalar_one_or_none()
            for key in sealed:
                values[key] = self._seal(tenant or "", values[key])
        done = conn.execute(
            update(approvals)
            .where(approvals.c.approval_id == approval_id, approvals.c.state == from_state)
            .values(**values)
        )
        if done.rowcount != 1:
            return False
        approval_changed(conn, approval_id)  # waits on it wake once this commits
        return True
