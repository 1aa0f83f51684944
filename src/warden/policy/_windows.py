"""Sliding-window aggregates over a tenant's recorded actions, decided in the store.

A window aggregates the actions of one or more tools over a period, grouped by a CEL
expression over the action and its facts (``args.customer_id``,
``facts.order.customer_id``): ``count``, ``sum`` or ``max`` of a field expression, or
``count_distinct`` of one. Reading a window and recording the current action happen in
one write transaction under a per-group lock, so N concurrent callers racing "at most 3
per customer per day" see 0, 1, 2, 3, ... and exactly 3 are allowed — in threads, in
processes, and across replicas. An action that is later rejected, expires or fails has
its entry voided, so it stops counting.

Group keys and field values are computed before the transaction (they may need facts);
one that cannot be computed raises ``WindowKeyError`` and the call is denied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, distinct, func, insert, select, update

from warden.policy._derived import CompiledWindow, WindowKeyError
from warden.store import Store
from warden.store._tables import window_entries

__all__ = ["WindowKeyError", "WindowPlan", "Windows"]


def _epoch_us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


@dataclass(slots=True)
class WindowPlan:
    """What one call reads and records: computed before its transaction."""

    #: window -> the call's group key, for every window read or recorded
    groups: dict[str, str] = field(default_factory=dict)
    #: window -> (value, distinct item) of the entry the call records
    entries: dict[str, tuple[float, str | None]] = field(default_factory=dict)


class Windows:
    def __init__(self, store: Store, windows: Mapping[str, CompiledWindow]) -> None:
        self._store = store
        self._windows = dict(windows)
        self._by_tool: dict[str, list[str]] = {}
        for name, window in self._windows.items():
            for tool in window.tools:
                self._by_tool.setdefault(tool, []).append(name)

    def recorded_by(self, tool: str) -> list[str]:
        """Windows that an action of ``tool`` adds to."""
        return self._by_tool.get(tool, [])

    def plan(self, tool: str, reads: Iterable[str], activation: Mapping[str, Any]) -> WindowPlan:
        """The groups and entries of a call; ``WindowKeyError`` if one cannot be computed."""
        plan = WindowPlan()
        recorded = self.recorded_by(tool)
        for name in sorted({*reads, *recorded}):
            plan.groups[name] = self._windows[name].group_of(activation)
        for name in recorded:
            plan.entries[name] = self._windows[name].entry_of(activation)
        return plan

    def lock_keys(self, tenant: str, plan: WindowPlan) -> list[str]:
        return [f"window:{tenant}:{name}:{group}" for name, group in plan.groups.items()]

    def compute(
        self,
        conn: Connection,
        tenant: str,
        names: Iterable[str],
        plan: WindowPlan,
        now: datetime,
    ) -> dict[str, float | int]:
        """Current values, not counting the action being decided."""
        values: dict[str, float | int] = {}
        for name in names:
            spec = self._windows[name].spec
            since = _epoch_us(now - spec.period)
            agg: Any
            if spec.aggregate == "count":
                agg = func.count()
            elif spec.aggregate == "count_distinct":
                agg = func.count(distinct(window_entries.c.item))
            elif spec.aggregate == "max":
                agg = func.coalesce(func.max(window_entries.c.value), 0.0)
            else:
                agg = func.coalesce(func.sum(window_entries.c.value), 0.0)
            row = conn.execute(
                select(agg).where(
                    and_(
                        window_entries.c.tenant == tenant,
                        window_entries.c.window_name == name,
                        window_entries.c.group_key == plan.groups[name],
                        window_entries.c.ts_us >= since,
                        window_entries.c.void.is_(False),
                    )
                )
            ).scalar_one()
            counts = spec.aggregate in ("count", "count_distinct")
            values[name] = int(row) if counts else float(row)
        return values

    def record(
        self,
        conn: Connection,
        tenant: str,
        plan: WindowPlan,
        action_id: str,
        now: datetime,
    ) -> None:
        rows = [
            {
                "tenant": tenant,
                "window_name": name,
                "group_key": plan.groups[name],
                "ts_us": _epoch_us(now),
                "value": value,
                "item": item,
                "action_id": action_id,
                "void": False,
            }
            for name, (value, item) in plan.entries.items()
        ]
        if rows:
            conn.execute(insert(window_entries), rows)

    @staticmethod
    def void(conn: Connection, action_id: str) -> None:
        conn.execute(
            update(window_entries).where(window_entries.c.action_id == action_id).values(void=True)
        )
