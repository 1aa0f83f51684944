"""The ledger: every kind of tampering is detected and the first bad event is named."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update

from warden import Gateway
from warden.ledger import export_jsonl, iter_events, verify
from warden.store import Store
from warden.store._tables import ledger_events, ledger_heads


async def _record_some(gateway: Gateway) -> str:
    async with gateway.run(tenant="t1", agent="bot", task="tamper me") as run:
        await run.call("get_order", {"order_id": "o1"})
        await run.call("save", {"key": "k", "value": 1})
        await run.call("get_doc", {"doc_id": "d1"})
    gateway.flush()
    return run.run_id


def _rows(store: Store, run_id: str) -> list[Any]:
    with store.read() as conn:
        return list(
            conn.execute(
                select(ledger_events)
                .where(ledger_events.c.run_id == run_id)
                .order_by(ledger_events.c.seq)
            ).mappings()
        )


async def test_untouched_ledger_verifies(gateway: Gateway) -> None:
    run_id = await _record_some(gateway)
    report = verify(gateway.store)
    assert report.ok, report.problems
    types = [e.type for e in iter_events(gateway.store, run_id=run_id)]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("executed") == 3
    assert "intent" in types  # the write left its intent before its outcome
    assert types.index("intent") < types.index("executed", types.index("intent"))


async def test_edited_payload_is_detected(gateway: Gateway) -> None:
    run_id = await _record_some(gateway)
    victim = _rows(gateway.store, run_id)[4]
    payload = json.loads(victim["payload"])
    payload["forged"] = True
    with gateway.store.write() as conn:
        conn.execute(
            update(ledger_events)
            .where(ledger_events.c.id == victim["id"])
            .values(payload=json.dumps(payload))
        )
    report = verify(gateway.store)
    assert not report.ok
    assert report.first is not None
    assert (report.first.kind, report.first.seq) == ("edited", victim["seq"])


async def test_edited_type_field_is_detected(gateway: Gateway) -> None:
    run_id = await _record_some(gateway)
    victim = _rows(gateway.store, run_id)[3]
    with gateway.store.write() as conn:
        conn.execute(
            update(ledger_events).where(ledger_events.c.id == victim["id"]).values(type="denied")
        )
    first = verify(gateway.store).first
    assert first is not None and first.seq == victim["seq"] and first.kind == "edited"


async def test_deleted_event_is_detected(gateway: Gateway) -> None:
    run_id = await _record_some(gateway)
    victim = _rows(gateway.store, run_id)[5]
    with gateway.store.write() as conn:
        conn.execute(delete(ledger_events).where(ledger_events.c.id == victim["id"]))
    first = verify(gateway.store).first
    assert first is not None
    assert first.kind == "deleted" and first.seq == victim["seq"] + 1


async def test_deleted_tail_is_detected(gateway: Gateway) -> None:
    run_id = await _record_some(gateway)
    last = _rows(gateway.store, run_id)[-1]
    with gateway.store.write() as conn:
        conn.execute(delete(ledger_events).where(ledger_events.c.id == last["id"]))
    first = verify(gateway.store).first
    assert first is not None and first.kind == "truncated"


async def test_inserted_event_is_detected(gateway: Gateway) -> None:
    run_id = await _record_some(gateway)
    rows = _rows(gateway.store, run_id)
    # Forge an event between seq 3 and 4: shift the later ones up by one and slot it in.
    with gateway.store.write() as conn:
        for row in reversed(rows[3:]):
            conn.execute(
                update(ledger_events)
                .where(ledger_events.c.id == row["id"])
                .values(seq=row["seq"] + 1)
            )
        forged = {k: v for k, v in rows[3].items() if k != "id"}
        forged.update(payload='{"forged":true}')
        conn.execute(insert(ledger_events).values(**forged))
    first = verify(gateway.store).first
    assert first is not None
    assert first.seq == rows[3]["seq"]
    assert first.kind in {"edited", "inserted"}


async def test_reordered_events_are_detected(gateway: Gateway) -> None:
    run_id = await _record_some(gateway)
    rows = _rows(gateway.store, run_id)
    a, b = rows[2], rows[6]
    # Swap the two events' positions in the stream (their sequence numbers).
    with gateway.store.write() as conn:
        conn.execute(update(ledger_events).where(ledger_events.c.id == a["id"]).values(seq=-1))
        conn.execute(
            update(ledger_events).where(ledger_events.c.id == b["id"]).values(seq=a["seq"])
        )
        conn.execute(
            update(ledger_events).where(ledger_events.c.id == a["id"]).values(seq=b["seq"])
        )
    report = verify(gateway.store)
    assert not report.ok
    first = report.first
    assert first is not None and first.seq == a["seq"]
    assert {p.kind for p in report.problems} & {"reordered", "edited"}


async def test_deleted_stream_is_detected(gateway: Gateway) -> None:
    run_id = await _record_some(gateway)
    with gateway.store.write() as conn:
        conn.execute(delete(ledger_events).where(ledger_events.c.run_id == run_id))
    first = verify(gateway.store).first
    assert first is not None and first.kind == "deleted" and first.stream == run_id


async def test_forged_head_alone_is_detected(gateway: Gateway) -> None:
    run_id = await _record_some(gateway)
    with gateway.store.write() as conn:
        conn.execute(
            update(ledger_heads).where(ledger_heads.c.stream == run_id).values(hash="f" * 64)
        )
    first = verify(gateway.store).first
    assert first is not None and first.kind == "truncated"


async def test_export_writes_every_event_as_json_lines(gateway: Gateway) -> None:
    await _record_some(gateway)
    buf = io.StringIO()
    n = export_jsonl(gateway.store, buf)
    lines = buf.getvalue().splitlines()
    assert n == len(lines) > 10
    first = json.loads(lines[0])
    assert {"stream", "seq", "ts", "type", "payload", "prev_hash", "hash"} <= set(first)
    assert first["ts"].endswith("Z")


@pytest.mark.parametrize("batch", [1, 1000])
async def test_chain_is_the_same_whatever_the_batching(
    store_url: str, effects: Any, batch: int
) -> None:
    from conftest import make_gateway

    gw = make_gateway(store_url, effects)
    gw.svc.ledger._batch_size = batch
    try:
        await _record_some(gw)
        assert verify(gw.store).ok
    finally:
        gw.close()
