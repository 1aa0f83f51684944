"""Every event a scenario emits is one of the typed, versioned event models, exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import SPEC, Effects, make_gateway, shop_tools

from warden import Gateway, Pending, ToolError, tool
from warden.events import KINDS, ActionRequested, Executed, parse_event, strict_event
from warden.ledger import iter_events, settle
from warden.spec import load_spec_text
from warden.testing import FakeUpstream

PAY = {"order_id": "o1", "customer_id": "c1", "amount": 500.0}
LEAD = {"approver": "lead@x", "roles": ["lead"], "rationale": "ok"}


async def _scenario(store_url: str) -> Gateway:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    effects = Effects()
    gw = make_gateway(store_url, effects, clock=lambda: now[0])
    run = gw.open_run(tenant="t", agent="bot", task="everything")
    await run.call("get_doc", {"doc_id": "d1"})  # executed, with provenance
    await run.call("save", {"key": "a", "value": 1})  # intent + executed
    await run.call("pay", {"order_id": "o-bob", "customer_id": "c1", "amount": 5.0})  # denied
    await run.call("save", {"key": "a", "value": "x"})  # failed: schema
    approved = await run.call("pay", PAY)
    rejected = await run.call("pay", {**PAY, "amount": 501.0})
    expiring = await run.call("pay", {**PAY, "amount": 502.0})
    assert isinstance(approved, Pending) and isinstance(rejected, Pending)
    await gw.reject(rejected.approval_id, **LEAD)  # frees its place in the 3-a-day window
    assert isinstance(expiring, Pending)
    await gw.approve(approved.approval_id, **LEAD)
    await gw.execute_approved(approved.approval_id, actor="key:ops")
    now[0] += timedelta(minutes=16)
    gw.expire_overdue()  # escalated to manager (both open ones)
    now[0] += timedelta(minutes=16)
    gw.expire_overdue()  # expired
    cancelled = await run.call("pay", {**PAY, "amount": 503.0})  # cancelled by finish
    assert isinstance(cancelled, Pending)
    gw.switches.set("tool", "remove", active=True, by="ops", reason="test")
    run.finish("completed")

    draft = make_gateway(store_url, effects, SPEC.replace("tier: autonomous", "tier: draft"))
    drafted = draft.open_run(tenant="t", agent="bot", task="draft")
    await drafted.call("save", {"key": "d", "value": 1})
    drafted.finish()
    draft.close()

    @tool(effect="write")
    def save(key: str, value: int) -> dict[str, Any]:
        raise ToolError("lost the answer", fault="tool")

    broken = Gateway(
        load_spec_text(SPEC, "shop.yaml"),
        [save, *[t for t in shop_tools(effects) if t.__name__ != "save"]],
        store=store_url,
    )
    unknown = broken.open_run(tenant="t", agent="bot", task="unknown")
    result = await unknown.call("save", {"key": "u", "value": 1})
    broken.close()
    gw.flush()
    settle(gw.store, gw.ledger, result.action_id, outcome="not-executed", note="checked", by="ops")

    with FakeUpstream() as fake:  # a model call: its usage event, with a budget
        models = MODELS.format(url=fake.openai_url)
        chatty = Gateway(load_spec_text(SPEC + models, "shop.yaml"), shop_tools(effects), store=store_url)
        async with chatty.run(tenant="t", agent="bot", task="chat") as chat_run:
            assert await chat_run.chat("small", [{"role": "user", "content": "hi"}], max_tokens=5)
        await chatty.aclose()
    gw.flush()
    return gw


MODELS = """
models:
  small:
    upstream: openai
    model: small-1
    base_url: {url}
    price: {{input_per_mtok: 1, output_per_mtok: 2}}
budgets:
  - {{name: per_run, scope: run, usd: 1}}
"""


async def test_every_kind_is_emitted_and_matches_its_model(store_url: str) -> None:
    gw = await _scenario(store_url)
    try:
        events = list(iter_events(gw.store))
        seen = {e.type for e in events}
        assert seen == KINDS
        for e in events:
            strict_event(e.type, e.payload)
    finally:
        gw.close()


def test_readers_get_typed_events_and_older_payloads_still_read() -> None:
    event = parse_event(
        "action_requested", {"action_id": "r.1", "tool": "save", "args": {}, "step": 1}
    )
    assert isinstance(event, ActionRequested) and event.v == 1 and event.proposed_by is None
    newer = parse_event("executed", {"action_id": "r.1", "v": 2, "result": 1, "later": True})
    assert isinstance(newer, Executed) and newer.v == 2
