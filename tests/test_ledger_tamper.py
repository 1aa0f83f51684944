"""Issue 7 §2: manipulations of a copied store that recompute every hash are still caught
— by the signed checkpoints, or by the tables that mirror the events — and ``verify
--tenant`` does not cry wolf on the shared switches stream (hole 1l)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, insert, select, update

from warden import Gateway
from warden.ledger import generate_key, load_private_key, take_checkpoint, verify
from warden.ledger._chain import GENESIS, event_hash
from warden.store import Store
from warden.store._tables import idempotency, ledger_events, ledger_heads, runs


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    private, _public = generate_key(tmp_path / "ledger.key")
    return load_private_key(private)


async def _record(gateway: Gateway, tenant: str = "t1") -> str:
    async with gateway.run(tenant=tenant, agent="bot", task="audit me") as run:
        await run.call("get_order", {"order_id": "o1"})
        await run.call("save", {"key": "k", "value": 1})
        await run.call("get_doc", {"doc_id": "d1"})
    gateway.flush()
    return run.run_id


def _events(store: Store, run_id: str) -> list[dict[str, Any]]:
    with store.read() as conn:
        rows = conn.execute(
            select(ledger_events)
            .where(ledger_events.c.stream == run_id)
            .order_by(ledger_events.c.seq)
        ).mappings()
        return [dict(r) for r in rows]


def _rechain(store: Store, run_id: str, events: list[dict[str, Any]]) -> None:
    """What an attacker with the database and the source code does: write ``events`` as
    the run's whole stream, every seq, previous hash, hash and the head recomputed."""
    prev, rows = GENESIS, []
    for seq, ev in enumerate(events, 1):
        row = {k: v for k, v in ev.items() if k != "id"}
        row.update(seq=seq, prev_hash=prev)
        row["hash"] = prev = event_hash(
            stream=row["stream"],
            seq=seq,
            tenant=row["tenant"],
            run_id=row["run_id"],
            ts=row["ts"],
            type=row["type"],
            payload=row["payload"],
            prev_hash=row["prev_hash"],
        )
        rows.append(row)
    with store.write() as conn:
        conn.execute(delete(ledger_events).where(ledger_events.c.stream == run_id))
        conn.execute(insert(ledger_events), rows)
        conn.execute(
            update(ledger_heads)
            .where(ledger_heads.c.stream == run_id)
            .values(seq=len(rows), hash=prev, tenant=rows[0]["tenant"])
        )


def _kinds(report: Any) -> set[str]:
    return {p.kind for p in report.problems}


async def test_untouched_store_verifies_against_its_checkpoint(
    gateway: Gateway, key: Ed25519PrivateKey
) -> None:
    await _record(gateway)
    take_checkpoint(gateway.store, key)
    await _record(gateway, "t2")  # events after the checkpoint are fine too
    report = verify(gateway.store, public_key=key.public_key())
    assert report.ok, report.problems
    assert report.checkpoints == 1 and report.key_pinned


async def test_i_run_rewritten_consistently_is_detected(
    gateway: Gateway, key: Ed25519PrivateKey
) -> None:
    run_id = await _record(gateway)
    take_checkpoint(gateway.store, key)
    events = _events(gateway.store, run_id)
    executed = next(e for e in events if e["type"] == "executed")
    payload = json.loads(executed["payload"])
    payload["result"] = {"forged": True}
    executed["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    _rechain(gateway.store, run_id, events)
    report = verify(gateway.store, public_key=key.public_key())
    assert not report.ok
    assert any(p.kind == "rewritten" and p.stream == run_id for p in report.problems)


@pytest.mark.parametrize("checkpointed", [True, False])
async def test_ii_intent_and_executed_removed_and_rechained_is_detected(
    gateway: Gateway, key: Ed25519PrivateKey, checkpointed: bool
) -> None:
    run_id = await _record(gateway)
    if checkpointed:
        take_checkpoint(gateway.store, key)
    events = _events(gateway.store, run_id)
    write = next(json.loads(e["payload"])["action_id"] for e in events if e["type"] == "intent")
    kept = [
        e
        for e in events
        if not (
            e["type"] in ("intent", "executed") and json.loads(e["payload"])["action_id"] == write
        )
    ]
    assert len(kept) == len(events) - 2
    _rechain(gateway.store, run_id, kept)
    report = verify(gateway.store, public_key=key.public_key())
    assert not report.ok
    # Without a checkpoint, the idempotency record of the write still gives it away.
    assert any(p.kind == "missing" and write in p.detail for p in report.problems)
    if checkpointed:  # two events fewer: the signed head's seq is past the new end
        assert any(p.kind == "truncated" and p.stream == run_id for p in report.problems)


@pytest.mark.parametrize("checkpointed", [True, False])
async def test_iii_last_event_deleted_and_head_reset_is_detected(
    gateway: Gateway, key: Ed25519PrivateKey, checkpointed: bool
) -> None:
    run_id = await _record(gateway)
    if checkpointed:
        take_checkpoint(gateway.store, key)
    events = _events(gateway.store, run_id)
    last, before = events[-1], events[-2]
    with gateway.store.write() as conn:
        conn.execute(delete(ledger_events).where(ledger_events.c.id == last["id"]))
        conn.execute(
            update(ledger_heads)
            .where(ledger_heads.c.stream == run_id)
            .values(seq=before["seq"], hash=before["hash"])
        )
    report = verify(gateway.store, public_key=key.public_key())
    assert not report.ok
    assert any(p.kind == "missing" and "run_finished" in p.detail for p in report.problems)
    if checkpointed:
        assert any(p.kind == "truncated" and p.stream == run_id for p in report.problems)


@pytest.mark.parametrize("checkpointed", [True, False])
async def test_iv_whole_run_deleted_with_its_head_is_detected(
    gateway: Gateway, key: Ed25519PrivateKey, checkpointed: bool
) -> None:
    run_id = await _record(gateway)
    other = await _record(gateway, "t2")
    if checkpointed:
        take_checkpoint(gateway.store, key)
    with gateway.store.write() as conn:
        conn.execute(delete(ledger_events).where(ledger_events.c.stream == run_id))
        conn.execute(delete(ledger_heads).where(ledger_heads.c.stream == run_id))
        conn.execute(delete(idempotency).where(idempotency.c.run_id == run_id))
    report = verify(gateway.store, public_key=key.public_key())
    assert not report.ok
    assert {p.stream for p in report.problems} == {run_id}  # the other run is fine
    assert other != run_id
    assert any(p.kind == "missing" and "none of its events" in p.detail for p in report.problems)
    if checkpointed:
        assert "deleted" in _kinds(report)


async def test_v_run_moved_to_another_tenant_is_detected(
    gateway: Gateway, key: Ed25519PrivateKey
) -> None:
    run_id = await _record(gateway, "t1")
    take_checkpoint(gateway.store, key)
    # Everything that names the tenant, rewritten consistently: events, hashes, head, rows.
    events = _events(gateway.store, run_id)
    for ev in events:
        ev["tenant"] = "t2"
    _rechain(gateway.store, run_id, events)
    with gateway.store.write() as conn:
        conn.execute(update(runs).where(runs.c.run_id == run_id).values(tenant="t2"))
        conn.execute(update(idempotency).where(idempotency.c.run_id == run_id).values(tenant="t2"))
    report = verify(gateway.store, public_key=key.public_key())
    assert not report.ok
    assert any(p.kind == "moved" and p.stream == run_id for p in report.problems)
    # Asked for the tenant it was taken from, the run is reported gone.
    assert not verify(gateway.store, tenant="t1", public_key=key.public_key()).ok


async def test_v_run_row_moved_alone_is_detected(gateway: Gateway) -> None:
    run_id = await _record(gateway, "t1")
    with gateway.store.write() as conn:
        conn.execute(update(runs).where(runs.c.run_id == run_id).values(tenant="t2"))
    report = verify(gateway.store)
    assert any(p.kind == "moved" and p.stream == run_id for p in report.problems)


async def test_answered_steps_without_events_are_reported(gateway: Gateway) -> None:
    run_id = await _record(gateway)
    with gateway.store.write() as conn:
        conn.execute(update(runs).where(runs.c.run_id == run_id).values(steps=5))
    report = verify(gateway.store)
    assert [(p.kind, p.stream) for p in report.problems] == [("missing", run_id)]
    assert "5 answered steps" in report.problems[0].detail


async def test_checkpoint_signed_with_another_key_is_reported(
    gateway: Gateway, key: Ed25519PrivateKey
) -> None:
    await _record(gateway)
    forger = Ed25519PrivateKey.generate()
    take_checkpoint(gateway.store, forger)
    report = verify(gateway.store, public_key=key.public_key())
    assert "checkpoint" in _kinds(report)


async def test_verify_for_one_tenant_checks_the_shared_switches_stream_whole(
    gateway: Gateway, key: Ed25519PrivateKey
) -> None:
    for tenant in ("t1", "t2"):
        gateway.switches.set("tenant", tenant, active=True, by="ops", reason="drill")
        gateway.switches.set("tenant", tenant, active=False, by="ops", reason="drill over")
    gateway.switches.set("tool", "pay", active=True, by="ops", reason="incident")
    await _record(gateway, "t1")
    await _record(gateway, "t2")
    take_checkpoint(gateway.store, key)
    for tenant in ("t1", "t2"):
        report = verify(gateway.store, tenant=tenant, public_key=key.public_key())
        assert report.ok, report.problems
