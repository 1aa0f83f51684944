"""Sliding-window aggregates over a tenant's recorded actions, decided in the store.

A window counts (or sums one argument of) the actions of one tool over a period, grouped
by an argument. Reading a window and recording the current action happen in one write
transaction under a per-group lock, so N concurrent callers racing "at most 3 per
customer per day" see 0, 1, 2, 3, ... and exactly 3 are allowed — in threads, in
processes, and across replicas. An action that is later rejected, expires or fails has
its entry voided, so it stops counting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from warden.spec import WindowSpec
from warden.store import Store
from warden.store._tables import window_entries


def _epoch_us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


class Windows:
    def __init__(self, store: Store, windows: Mapping[str, WindowSpec]) -> None:
        self._store = store
        self._windows = dict(windows)
        self._by_tool: dict[str, list[str]] = {}
        for name, spec in self._windows.items():
            self._by_tool.setdefault(spec.tool, []).append(name)

    def recorded_by(self, tool: str) -> list[str]:
        """Windows that an action of ``tool`` adds to."""
        return self._by_tool.get(tool, [])

    def group_key(self, name: str, args: Mapping[str, Any]) -> str | None:
        spec = self._windows[name]
        if spec.group_by is None:
            return "*"
        value = args.get(spec.group_by)
        return None if value is None else str(value)

    def lock_keys(self, tenant: str, names: Iterable[str], args: Mapping[str, Any]) -> list[str]:
        keys = []
        for name in names:
            group = self.group_key(name, args)
            if group is not None:
                keys.append(f"window:{tenant}:{name}:{group}")
        return keys

    def compute(
        self,
        conn: Connection,
        tenant: str,
        names: Iterable[str],
        args: Mapping[str, Any],
        now: datetime,
    ) -> dict[str, float | int]:
        """Current values, not counting the action being decided."""
        values: dict[str, float | int] = {}
        for name in names:
            spec = self._windows[name]
            group = self.group_key(name, args)
            if group is None:
                values[name] = 0
                continue
            since = _epoch_us(now - spec.period)
            agg = (
                func.count()
                if spec.aggregate == "count"
                else func.coalesce(func.sum(window_entries.c.value), 0.0)
            )
            row = conn.execute(
                select(agg).where(
                    and_(
                        window_entries.c.tenant == tenant,
                        window_entries.c.window_name == name,
                        window_entries.c.group_key == group,
                        window_entries.c.ts_us >= since,
                        window_entries.c.void.is_(False),
                    )
                )
            ).scalar_one()
            values[name] = int(row) if spec.aggregate == "count" else float(row)
        return values

    def record(
        self,
        conn: Connection,
        tenant: str,
        tool: str,
        args: Mapping[str, Any],
        action_id: str,
        now: datetime,
    ) -> None:
        rows = []
        for name in self.recorded_by(tool):
            spec = self._windows[name]
            group = self.group_key(name, args)
            if group is None:
                continue
            value: Any = 1.0
            if spec.field is not None:
                raw = args.get(spec.field, 0)
                value = float(raw) if isinstance(raw, int | float | Decimal) else 0.0
            rows.append(
                {
                    "tenant": tenant,
                    "window_name": name,
                    "group_key": group,
                    "ts_us": _epoch_us(now),
                    "value": value,
                    "action_id": action_id,
                    "void": False,
                }
            )
        if rows:
            conn.execute(insert(window_entries), rows)

    @staticmethod
    def void(conn: Connection, action_id: str) -> None:
        conn.execute(
            update(window_entries).where(window_entries.c.action_id == action_id).values(void=True)
        )
