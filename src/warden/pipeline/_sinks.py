"""Where the events the stages emit go: the ledger and the webhook outbox, behind one
interface that telemetry sinks (traces, metrics, SLO rollups) implement too."""

from __future__ import annotations

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


class OutboxSink:
    """Webhook notifications, written to the outbox in the event's own transaction (so a
    notification exists exactly when what it announces does)."""

    def __init__(self, workflow: str, clock: Callable[[], datetime]) -> None:
        self.workflow = workflow
        self.clock = clock

    def emit(
        self,
        run_id: str,
        tenant: str,
        kind: EventKind,
        payload: dict[str, Any],
        conn: Connection | None,
    ) -> None:
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
