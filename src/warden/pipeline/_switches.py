"""Kill switches at global, tenant, workflow and tool scope, persisted in the store.

Every process polls the (tiny) switch table at most every ``refresh_s`` seconds, so a
switch flipped anywhere stops the next call everywhere within that interval, with no
restart and no cost on the hot path between refreshes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select, update

from warden.errors import UsageError
from warden.ledger import LedgerWriter
from warden.store import Store
from warden.store._ops import insert_if_absent
from warden.store._tables import switches

SWITCH_STREAM = "switches"


class Scope(StrEnum):
    GLOBAL = "global"
    TENANT = "tenant"
    WORKFLOW = "workflow"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class Switch:
    scope: Scope
    target: str
    active: bool
    set_by: str
    reason: str
    set_at: datetime

    def describe(self) -> str:
        where = (
            "everything" if self.scope is Scope.GLOBAL else f"{self.scope.value} {self.target!r}"
        )
        return f"kill switch on {where}, set by {self.set_by} at {self.set_at:%Y-%m-%d %H:%M:%S}Z: {self.reason}"


class SwitchBoard:
    def __init__(self, store: Store, ledger: LedgerWriter, *, refresh_s: float = 0.25) -> None:
        self._store = store
        self._ledger = ledger
        self._refresh_s = refresh_s
        self._active: dict[tuple[Scope, str], Switch] = {}
        self._loaded_at = -1e9
        self._lock = threading.Lock()

    def set(
        self, scope: Scope | str, target: str | None, *, active: bool, by: str, reason: str
    ) -> Switch:
        scope = Scope(scope)
        if scope is Scope.GLOBAL:
            target = "*"
        elif not target:
            raise UsageError(f"a {scope.value} switch needs a target ({scope.value} name)")
        if not by.strip() or not reason.strip():
            raise UsageError("a switch change needs who (by) and why (reason)")
        switch = Switch(scope, target, active, by, reason, datetime.now(UTC))
        values = {
            "active": active,
            "set_by": by,
            "reason": reason,
            "set_at": switch.set_at,
        }
        with self._ledger.transaction() as conn:
            if not insert_if_absent(
                conn, switches, {"scope": scope.value, "target": target, **values}
            ):
                conn.execute(
                    update(switches)
                    .where(switches.c.scope == scope.value, switches.c.target == target)
                    .values(**values)
                )
            self._ledger.append(
                SWITCH_STREAM,
                target if scope is Scope.TENANT else "*",
                None,
                "switch_changed",
                {
                    "scope": scope.value,
                    "target": target,
                    "active": active,
                    "by": by,
                    "reason": reason,
                },
            )
        self._loaded_at = -1e9  # this process sees its own change at once
        return switch

    def list(self) -> list[Switch]:
        with self._store.read() as conn:
            rows = conn.execute(
                select(switches).order_by(switches.c.scope, switches.c.target)
            ).mappings()
            return [
                Switch(
                    Scope(r["scope"]),
                    r["target"],
                    r["active"],
                    r["set_by"],
                    r["reason"],
                    r["set_at"],
                )
                for r in rows
            ]

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._loaded_at < self._refresh_s:
                return
            self._active = {(s.scope, s.target): s for s in self.list() if s.active}
            self._loaded_at = time.monotonic()

    def blocking(self, tenant: str, workflow: str, tool: str) -> Switch | None:
        """The active switch that stops this call, if any."""
        if time.monotonic() - self._loaded_at >= self._refresh_s:
            self._refresh()
        active = self._active
        if not active:
            return None
        for key in (
            (Scope.GLOBAL, "*"),
            (Scope.TENANT, tenant),
            (Scope.WORKFLOW, workflow),
            (Scope.TOOL, tool),
        ):
            found = active.get(key)
            if found is not None:
                return found
        return None
