"""Where the events the stages emit go: the ledger and the webhook outbox, behind one
interface that telemetry sinks (traces, metrics, SLO rollups) implement too."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from warden import notify
from warden.events import EventKind
from warden.ledger import LedgerWriter
from warden.store._tables import utc_text


class Sink(Protocol):
    def emit(
        self,
        run_id: str,
        tenant: str,
        kind: EventKind,
        payload: dict[str, Any],
        conn: Connection | None,
    ) -> None:
        """Take one event. ``conn``: the transaction the event commits with, when it must
        commit with other writes (an approval and its notification); otherwise None."""


class LedgerSink:
    """The hash-chained ledger: the run's stream. Durability is the writer's: events
    emitted inside ``ledger.transaction()`` commit with it (a write's intent before its
    effect), the others in the next batch."""

    def __init__(self, ledger: LedgerWriter) -> None:
        self.ledger = ledger

    def emit(
        self,
        run_id: str,
        tenant: str,
        kind: EventKind,
        payload: dict[str, Any],
        conn: Connection | None,
    ) -> None:
        self.ledger.append(run_id, tenant, run_id, kind, payload)


#: the outcome events of an action (an approved one's ends in ``approval_executed``)
_OUTCOMES = {"executed": "executed", "failed": "failed", "denied": "denied"}
_RESUMED_MAX = 10_000


class OutboxSink:
    """Webhook notifications, written to the outbox in the event's own transaction (so a
    notification exists exactly when what it announces does): ``approval_requested``,
    ``approval_decided``, and ``approval_executed`` (what became of an approved action;
    written with the ledger batch that holds its outcome, through ``ledger.defer``).
    docs/webhooks.md documents every payload."""

    def __init__(
        self, workflow: str, clock: Callable[[], datetime], ledger: LedgerWriter | None = None
    ) -> None:
        self.workflow = workflow
        self.clock = clock
        self.ledger = ledger
        # approved actions resumed in this process: action id -> approval id
        self._resumed: OrderedDict[str, str] = OrderedDict()

    def emit(
        self,
        run_id: str,
        tenant: str,
        kind: EventKind,
        payload: dict[str, Any],
        conn: Connection | None,
    ) -> None:
        if kind in _OUTCOMES:
            if self._resumed:
                self._outcome(run_id, tenant, kind, payload, conn)
            return
        if kind == "action_resumed":
            self._resumed[payload["action_id"]] = payload["approval_id"]
            if len(self._resumed) > _RESUMED_MAX:
                self._resumed.popitem(last=False)
            return
        if kind == "approval_decided" and conn is not None:
            notify.enqueue(
                conn,
                tenant=tenant,
                kind="approval_decided",
                now=self.clock(),
                payload={
                    "approval_id": payload["approval_id"],
                    "workflow": self.workflow,
                    "run_id": run_id,
                    "action_id": payload["action_id"],
                    "decision": payload["decision"],
                    "approver": payload["approver"],
                    "on_behalf_of": payload.get("on_behalf_of"),
                    "role": payload.get("role"),
                    "rationale": payload["rationale"],
                },
            )
            return
        if kind != "approval_requested" or conn is None:
            return
        deadline = payload["deadline"]
        notify.enqueue(
            conn,
            tenant=tenant,
            kind="approval_requested",
            now=self.clock(),
            payload={
                "approval_id": payload["approval_id"],
                "workflow": self.workflow,
                "run_id": run_id,
                "tool": payload["tool"],
                "args": payload["args"],
                "role": payload["role"],
                "sla_class": payload["sla_class"],
                "deadline": deadline if isinstance(deadline, str) else utc_text(deadline),
                "risk": payload["risk"],
                "reasons": payload["reasons"],
            },
        )

    def _outcome(
        self,
        run_id: str,
        tenant: str,
        kind: str,
        payload: dict[str, Any],
        conn: Connection | None,
    ) -> None:
        approval_id = self._resumed.pop(payload.get("action_id", ""), None)
        if approval_id is None:
            return
        body = {
            "approval_id": approval_id,
            "workflow": self.workflow,
            "run_id": run_id,
            "action_id": payload["action_id"],
            "outcome": _OUTCOMES[kind],
            "kind": payload.get("kind"),
            "replayed": payload.get("replayed", False),
        }
        now = self.clock()

        def write(tx: Connection) -> None:
            notify.enqueue(tx, tenant=tenant, kind="approval_executed", now=now, payload=body)

        if conn is not None:
            write(conn)
        elif self.ledger is not None:
            self.ledger.defer(write, lambda: None)
