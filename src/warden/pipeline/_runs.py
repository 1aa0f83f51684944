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
from functools import cache
from typing import Any

from warden.ledger import canonical_json
from warden.store import Store
from warden.store import _fast as fast

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
def _claim_sql(workflows: int, by_tenant: bool, by_agent: bool = False) -> str:
    return (
        "UPDATE runs SET steps = steps + 1 WHERE run_id = ? AND status = 'running'"
        f" AND workflow IN ({', '.join('?' * workflows)})"
        + (" AND tenant = ?" if by_tenant else "")
        + (" AND agent = ?" if by_agent else "")
        + f" RETURNING {', '.join(RUN_FIELDS)}"
    )


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
    params: list[Any] = [run_id, *workflows]
    if tenant is not None:
        params.append(tenant)
    if agent is not None:
        params.append(agent)
    with store.autocommit() as db:
        sql = _claim_sql(len(workflows), tenant is not None, agent is not None)
        row = db.fetch_one(sql, params)
    return None if row is None else dict(zip(RUN_FIELDS, row, strict=True))


_SET = (
    "state = ?, state_version = state_version + 1,"
    " steps = CASE WHEN steps < ? THEN ? ELSE steps END"
)
_SAVE_IF_CURRENT = f"UPDATE runs SET {_SET} WHERE run_id = ? AND state_version = ?"
_SAVE = f"UPDATE runs SET {_SET} WHERE run_id = ?"
_READ_FOR_MERGE = "SELECT state, state_version FROM runs WHERE run_id = ?"


def save_counters(
    store: Store,
    run_id: str,
    *,
    base: dict[str, Any],
    mine: dict[str, Any],
    version: int,
    steps: int,
) -> tuple[dict[str, Any], int]:
    """Write ``mine``, the counters of a call that started from ``base`` at ``version``.

    Returns the counters now stored and their version: ``mine`` if no other call wrote
    since ``version``, else the merge of ``mine`` onto what the other calls wrote.
    """
    text = canonical_json(mine)
    with store.autocommit() as db:
        if db.execute(_SAVE_IF_CURRENT, (text, steps, steps, run_id, version)) == 1:
            return mine, version + 1
    with store.write(durable=False) as conn:
        row = fast.fetch_one(conn, _READ_FOR_MERGE + store.for_update, (run_id,))
        if row is None:  # the run is gone (never expected): nothing to merge onto
            return mine, version
        merged = merge_counters(json.loads(row[0]) if row[0] else {}, base, mine)
        fast.execute(conn, _SAVE, (canonical_json(merged), steps, steps, run_id)).close()
        return merged, int(row[1]) + 1


def merge_counters(
    fresh: dict[str, Any], base: dict[str, Any], mine: dict[str, Any]
) -> dict[str, Any]:
    """``mine`` changed ``base``; other calls changed it into ``fresh``: both changes.

    Counts and retries add up; a stop sticks; provenance is the union of what either saw;
    the identical-call streak is this call's (the calls overlapped, so neither came last).
    """
    merged = dict(mine)
    for name in ("counts", "retries"):
        f, b, m = fresh.get(name, {}), base.get(name, {}), mine.get(name, {})
        merged[name] = {k: int(f.get(k, 0)) + int(m.get(k, 0)) - int(b.get(k, 0)) for k in {*f, *m}}
    merged["stopped"] = mine.get("stopped") or fresh.get("stopped")
    f_prov, m_prov = fresh.get("provenance", {}), mine.get("provenance", {})
    untrusted = [list(t) for t in f_prov.get("untrusted", [])]
    seen = {tuple(t) for t in untrusted}
    for item in m_prov.get("untrusted", []):
        if tuple(item) not in seen:
            seen.add(tuple(item))
            untrusted.append(list(item))
    merged["provenance"] = {
        "untrusted": untrusted,
        "trusted": sorted({*f_prov.get("trusted", []), *m_prov.get("trusted", [])}),
    }
    return merged
