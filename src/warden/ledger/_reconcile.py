"""Writes whose outcome was never recorded, and settling them by hand.

A write's intent is made durable before its side effect; its outcome is written after. If
the store fails in between (or the process dies), the ledger holds an intent with no
outcome and the idempotency key stays ``started``, so every repeat is refused
(``in_progress``). A tool that timed out leaves its key ``unknown`` for the same reason.
Only someone who can look at the world (did the payment go out?) can settle these: they
list them with ``unsettled`` and record what happened with ``settle``, which writes a
``reconciled`` event on the run's stream and settles the key in the same transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, select, update

from warden.errors import ConflictError, NotFoundError, UsageError
from warden.ledger._canonical import canonical_json
from warden.ledger._crosscheck import OUTCOMES
from warden.ledger._writer import LedgerWriter
from warden.store import Store
from warden.store._tables import approvals, idempotency, ledger_events

if TYPE_CHECKING:
    from warden.telemetry._vault import Vault

Settlement = Literal["done", "not-executed"]


@dataclass(frozen=True)
class Unsettled:
    action_id: str
    run_id: str
    tenant: str
    tool: str | None
    idempotency_key: str | None
    intent_at: str | None
    # no_outcome: an intent and nothing after it; outcome_unknown: the tool may have had its
    # effect (timeout, bad output) and the key refuses repeats until settled.
    reason: str
    key_state: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "run_id": self.run_id,
            "tenant": self.tenant,
            "tool": self.tool,
            "idempotency_key": self.idempotency_key,
            "intent_at": self.intent_at,
            "reason": self.reason,
            "key_state": self.key_state,
        }


_TYPES = ("intent", *sorted(OUTCOMES))


def unsettled(store: Store, *, tenant: str | None = None) -> list[Unsettled]:
    """Intents with no outcome event, and keys left ``unknown`` — oldest first."""
    intents: dict[str, dict[str, Any]] = {}
    outcome: dict[str, str] = {}
    q = (
        select(
            ledger_events.c.tenant,
            ledger_events.c.run_id,
            ledger_events.c.ts,
            ledger_events.c.type,
            ledger_events.c.payload,
        )
        .where(ledger_events.c.type.in_(_TYPES), ledger_events.c.run_id.is_not(None))
        .order_by(ledger_events.c.stream, ledger_events.c.seq)
    )
    kq = select(idempotency)
    if tenant is not None:
        q = q.where(ledger_events.c.tenant == tenant)
        kq = kq.where(idempotency.c.tenant == tenant)
    with store.read() as conn:
        for row in conn.execute(q):
            try:
                data = json.loads(row.payload)
            except ValueError:
                continue
            action = str(data.get("action_id"))
            if row.type == "intent":
                intents[action] = {
                    "tenant": row.tenant,
                    "run_id": row.run_id,
                    "ts": row.ts,
                    "tool": data.get("tool"),
                    "key": data.get("idempotency_key"),
                }
            else:
                outcome[action] = row.type
        keys = {r.action_id: r for r in conn.execute(kq)}
    found: list[Unsettled] = []
    for action, intent in intents.items():
        key = keys.get(action)
        if action not in outcome:
            reason = "no_outcome"
        elif key is not None and key.state == "unknown" and outcome[action] != "reconciled":
            reason = "outcome_unknown"
        else:
            continue
        found.append(
            Unsettled(
                action,
                intent["run_id"],
                intent["tenant"],
                intent["tool"],
                intent["key"],
                intent["ts"],
                reason,
                None if key is None else key.state,
            )
        )
    found.sort(key=lambda u: u.intent_at or "")
    return found


def settle(
    store: Store,
    ledger: LedgerWriter,
    action_id: str,
    *,
    outcome: Settlement,
    note: str,
    by: str,
    result: Any = None,
    vault: Vault | None = None,
) -> dict[str, Any]:
    """Record what happened to a write whose outcome was never recorded (or is unknown).

    ``done``: it had its effect; the key becomes ``done`` with ``result``, so a repeat is
    answered with it. ``not-executed``: it did not; the key is released, so a corrected
    retry may run. Either way a ``reconciled`` event records who said so and why, and an
    approval left ``executing`` for the action is closed. Returns the event's payload.

    The note, who and the result are free text a person typed: their PII is tokenized
    under the run's tenant key before the event is stored, and the result kept for
    repeats (and on the approval) is sealed with that key, as the pipeline stores them
    (``vault``: default, one over ``store``).
    """
    # imported here: the telemetry package imports the pipeline, which imports the ledger
    from warden.telemetry._redact import redact_record
    from warden.telemetry._vault import Vault

    if outcome not in ("done", "not-executed"):
        raise UsageError(f"--as must be done or not-executed, not {outcome!r}")
    if not note.strip() or not by.strip():
        raise UsageError("settling an action needs a note (what was checked) and who settles it")
    found = [u for u in unsettled(store) if u.action_id == action_id]
    if not found:
        known = _has_intent(store, action_id)
        raise (ConflictError if known else NotFoundError)(
            f"action {action_id} is already settled"
            if known
            else f"no write {action_id!r} with an intent on the ledger"
        )
    item = found[0]
    vault = vault if vault is not None else Vault(store)
    payload = {
        "action_id": action_id,
        "settled_as": outcome,
        "note": note,
        "by": by,
        "reason": item.reason,
        "idempotency_key": item.idempotency_key,
        "result": result if outcome == "done" else None,
    }
    payload = redact_record(vault, item.tenant, payload)
    # sealed before the transaction: a tenant's first seal makes its key, in a write of
    # its own (inside this one it would wait on this one's lock, on SQLite)
    kept = vault.seal(item.tenant, canonical_json(result))
    closed = vault.seal(item.tenant, canonical_json(result if outcome == "done" else payload))
    with ledger.transaction() as conn:
        if item.idempotency_key is not None:
            key_match = (idempotency.c.tenant == item.tenant) & (
                idempotency.c.key == item.idempotency_key
            )
            if outcome == "done":
                conn.execute(
                    update(idempotency)
                    .where(key_match, idempotency.c.state.in_(("started", "unknown")))
                    .values(state="done", result=kept)
                )
            else:
                conn.execute(
                    delete(idempotency).where(
                        key_match, idempotency.c.state.in_(("started", "unknown"))
                    )
                )
        conn.execute(
            update(approvals)
            .where(approvals.c.action_id == action_id, approvals.c.state == "executing")
            .values(
                state="executed" if outcome == "done" else "failed",
                result=closed,
            )
        )
        ledger.append(item.run_id, item.tenant, item.run_id, "reconciled", payload)
    return payload


def _has_intent(store: Store, action_id: str) -> bool:
    run_id = action_id.rsplit(".", 1)[0]
    with store.read() as conn:
        rows = conn.execute(
            select(ledger_events.c.payload).where(
                ledger_events.c.stream == run_id, ledger_events.c.type == "intent"
            )
        ).all()
    return any(json.loads(r.payload).get("action_id") == action_id for r in rows)
