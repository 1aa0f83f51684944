"""A run's counters in the store, so that its calls may reach any process or replica.

Each governed call served over HTTP takes its step atomically (``claim_step``): the action
id ``<run>.<step>`` is unique and ``max_steps`` counts every call, however many replicas
serve the run and whether or not its calls overlap. After the call, the run's other
counters (per-tool counts and retries, the identical-call streak, provenance, a stop) are
written before the answer goes out (``save_counters``), so the run's next call sees them
wherever it lands. The write is conditional on ``state_version``: if another call of the
run wrote in between, this call's changes are merged onto what it wrote instead of
overwriting it.

Both are single autocommit statements without an fsync (a lost tail after a crash is the
same window as the buffered ledger events that record those calls; see ``warden.store``).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import bindparam, case, select, update

from warden.ledger import canonical_json
from warden.policy import ProvenanceTracker
from warden.store import Store
from warden.store import _fast as fast
from warden.store._statements import Statement
from warden.store._tables import runs
from warden.telemetry import Vault

# What a call needs of its run's row (no timestamps: they are not on the hot path).
RUN_FIELDS = (
    "run_id",
    "tenant",
    "workflow",
    "agent",
    "tier",
    "task",
    "task_type",
    "end_user",
    "opened_by",
    "status",
    "state",
    "steps",
    "state_version",
)


@cache
def _claim(workflows: int, by_tenant: bool, by_agent: bool) -> Statement:
    def build(_: str) -> Any:
        where = [
            runs.c.run_id == bindparam("run_id"),
            runs.c.status == "running",
            runs.c.workflow.in_([bindparam(f"w{i}") for i in range(workflows)]),
        ]
        if by_tenant:
            where.append(runs.c.tenant == bindparam("tenant"))
        if by_agent:
            where.append(runs.c.agent == bindparam("agent"))
        return (
            update(runs)
            .where(*where)
            .values(steps=runs.c.steps + 1)
            .returning(*(runs.c[name] for name in RUN_FIELDS))
        )

    return Statement(build)


def _claim_values(
    run_id: str, workflows: Collection[str], tenant: str | None, agent: str | None
) -> tuple[Statement, dict[str, Any]]:
    values: dict[str, Any] = {"run_id": run_id, "tenant": tenant, "agent": agent}
    values.update((f"w{i}", name) for i, name in enumerate(workflows))
    return _claim(len(workflows), tenant is not None, agent is not None), values


def claim_step(
    store: Store,
    run_id: str,
    *,
    workflows: Collection[str],
    tenant: str | None,
    agent: str | None = None,
) -> dict[str, Any] | None:
    """Take the next step of a running run of one of ``workflows`` (and of ``tenant`` and
    ``agent``, unless None) and return the run's row, ``steps`` being the step taken; None,
    with nothing changed, if there is no such run."""
    if not workflows:
        return None
    stmt, values = _claim_values(run_id, workflows, tenant, agent)
    with store.autocommit() as db:
        row = db.one(stmt, values)
    return None if row is None else dict(zip(RUN_FIELDS, row, strict=True))


async def claim_step_async(
    store: Store,
    run_id: str,
    *,
    workflows: Collection[str],
    tenant: str | None,
    agent: str | None = None,
) -> dict[str, Any] | None:
    """``claim_step`` awaited on the event loop (PostgreSQL: ``Store.async_autocommit``)."""
    if not workflows:
        return None
    stmt, values = _claim_values(run_id, workflows, tenant, agent)
    async with store.async_autocommit() as db:
        row = await db.one(stmt, values)
    return None if row is None else dict(zip(RUN_FIELDS, row, strict=True))


def _save(if_version: bool) -> Statement:
    def build(_: str) -> Any:
        steps: Any = bindparam("steps")
        where = [runs.c.run_id == bindparam("run_id")]
        if if_version:
            where.append(runs.c.state_version == bindparam("version"))
        return (
            update(runs)
            .where(*where)
            .values(
                state=bindparam("state"),
                state_version=runs.c.state_version + 1,
                steps=case((runs.c.steps < steps, steps), else_=runs.c.steps),
            )
        )

    return Statement(build)


_SAVE_IF_CURRENT = _save(if_version=True)
_SAVE = _save(if_version=False)


def save_counters(
    store: Store,
    run_id: str,
    *,
    base: dict[str, Any],
    mine: dict[str, Any],
    version: int,
    steps: int,
    sealer: Sealer | None = None,
) -> tuple[dict[str, Any], int]:
    """Write ``mine``, the counters of a call that started from ``base`` at ``version``.
    ``sealer``: stores the state sealed with the run's tenant key (it holds argument values
    and what the run read: PII).

    Returns the counters now stored and their version: ``mine`` if no other call wrote
    since ``version``, else the merge of ``mine`` onto what the other calls wrote.
    """
    values = _save_values(run_id, mine, version, steps, sealer)
    with store.autocommit() as db:
        if db.run(_SAVE_IF_CURRENT, values) == 1:
            return mine, version + 1
    return _merge_and_save(store, values, base, mine, sealer)


async def save_counters_async(
    store: Store,
    run_id: str,
    *,
    base: dict[str, Any],
    mine: dict[str, Any],
    version: int,
    steps: int,
    sealer: Sealer | None = None,
) -> tuple[dict[str, Any], int] | None:
    """``save_counters``'s common case awaited on the event loop (PostgreSQL): the
    counters if no other call wrote since ``version``, else None with nothing written
    (then ``save_counters`` merges, in a store thread: it takes a row lock)."""
    values = _save_values(run_id, mine, version, steps, sealer)
    async with store.async_autocommit() as db:
        if await db.run(_SAVE_IF_CURRENT, values) == 1:
            return mine, version + 1
    return None


@dataclass(frozen=True, slots=True)
class Sealer:
    """Seals a run's stored state with its tenant's vault key, and opens it."""

    vault: Vault
    tenant: str

    def seal(self, text: str) -> str:
        return self.vault.seal(self.tenant, text)

    def unseal(self, text: str) -> str:
        return self.vault.unseal(self.tenant, text)


def _save_values(
    run_id: str, mine: dict[str, Any], version: int, steps: int, sealer: Sealer | None
) -> dict[str, Any]:
    state = canonical_json(mine)
    if sealer is not None:
        state = sealer.seal(state)
    return {"state": state, "steps": steps, "run_id": run_id, "version": version}


def _merge_and_save(
    store: Store,
    values: dict[str, Any],
    base: dict[str, Any],
    mine: dict[str, Any],
    sealer: Sealer | None,
) -> tuple[dict[str, Any], int]:
    run_id = values["run_id"]
    with store.write(durable=False) as conn:
        read = select(runs.c.state, runs.c.state_version).where(runs.c.run_id == run_id)
        row = conn.execute(read if store.is_sqlite else read.with_for_update()).first()
        if row is None:  # the run is gone (never expected): nothing to merge onto
            return mine, int(values["version"])
        fresh = row[0] if sealer is None or not row[0] else sealer.unseal(row[0])
        merged = merge_counters(json.loads(fresh) if fresh else {}, base, mine)
        values["state"] = canonical_json(merged)
        if sealer is not None:
            values["state"] = sealer.seal(values["state"])
        fast.run(conn, _SAVE, values).close()
        return merged, int(row[1]) + 1


def merge_counters(
    fresh: dict[str, Any], base: dict[str, Any], mine: dict[str, Any]
) -> dict[str, Any]:
    """``mine`` changed ``base``; other calls changed it into ``fresh``: both changes.

    Counts, retries, cost and tokens add up; a stop sticks; the run's risk is the higher one;
    provenance is the union of what either saw;
    the identical-call streak is this call's (the calls overlapped, so neither came last).
    """
    merged = dict(mine)
    for name in ("counts", "retries"):
        f, b, m = fresh.get(name, {}), base.get(name, {}), mine.get(name, {})
        merged[name] = {k: int(f.get(k, 0)) + int(m.get(k, 0)) - int(b.get(k, 0)) for k in {*f, *m}}
    for name in ("cost_nusd", "tokens"):
        merged[name] = int(fresh.get(name, 0)) + int(mine.get(name, 0)) - int(base.get(name, 0))
    merged["stopped"] = mine.get("stopped") or fresh.get("stopped")
    merged["risk"] = max(float(fresh.get("risk", 0.0)), float(mine.get("risk", 0.0)))
    merged["provenance"] = ProvenanceTracker.merge_snapshots(
        fresh.get("provenance", {}), mine.get("provenance", {})
    )
    return merged
