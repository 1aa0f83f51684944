"""Idempotency: one key, one side effect, the first result for every repeat."""

from __future__ import annotations

import asyncio

from conftest import Effects

from warden import Allowed, Failed, FailureKind, Gateway


async def test_same_key_one_side_effect(gateway: Gateway, effects: Effects) -> None:
    async with gateway.run(tenant="t", agent="bot", task="idem") as run:
        first = await run.call("save", {"key": "a", "value": 1}, idempotency_key="req-1")
        second = await run.call("save", {"key": "a", "value": 1}, idempotency_key="req-1")
    assert isinstance(first, Allowed) and isinstance(second, Allowed)
    assert second.replayed and second.result == first.result
    assert len(effects.saved) == 1


async def test_key_holds_across_runs_of_the_tenant(gateway: Gateway, effects: Effects) -> None:
    for _ in range(3):
        async with gateway.run(tenant="t", agent="bot", task="retry after crash") as run:
            result = await run.call("save", {"key": "a", "value": 1}, idempotency_key="order-42")
            assert isinstance(result, Allowed)
    assert len(effects.saved) == 1


async def test_derived_key_dedupes_identical_writes_in_a_run(
    gateway: Gateway, effects: Effects
) -> None:
    async with gateway.run(tenant="t", agent="bot", task="derived") as run:
        await run.call("save", {"key": "a", "value": 1})
        await run.call("get_order", {"order_id": "o1"})
        again = await run.call("save", {"key": "a", "value": 1})
        other = await run.call("save", {"key": "a", "value": 2})
    assert isinstance(again, Allowed) and again.replayed
    assert isinstance(other, Allowed) and not other.replayed
    assert effects.saved == [{"key": "a", "value": 1}, {"key": "a", "value": 2}]


async def test_concurrent_calls_with_one_key_execute_once(
    gateway: Gateway, effects: Effects
) -> None:
    async def one(i: int) -> object:
        async with gateway.run(tenant="t", agent="bot", task=f"race {i}") as run:
            return await run.call("save", {"key": "a", "value": 1}, idempotency_key="shared")

    results = await asyncio.gather(*(one(i) for i in range(8)))
    assert len(effects.saved) == 1
    allowed = [r for r in results if isinstance(r, Allowed)]
    in_flight = [r for r in results if isinstance(r, Failed) and r.kind is FailureKind.IN_PROGRESS]
    assert len(allowed) + len(in_flight) == 8 and allowed


async def test_failed_write_frees_its_key(gateway: Gateway, effects: Effects) -> None:
    from warden import ToolError

    calls = []
    original = gateway.svc.registry.get("save")
    assert original is not None and original.fn is not None
    real = original.fn

    def flaky(key: str, value: int) -> dict[str, object]:
        calls.append(key)
        if len(calls) == 1:
            raise ToolError("backend said no before doing anything", effect=False)
        return real(key=key, value=value)  # type: ignore[no-any-return]

    from dataclasses import replace

    gateway.svc.registry._tools["save"] = replace(original, fn=flaky)
    async with gateway.run(tenant="t", agent="bot", task="retry") as run:
        first = await run.call("save", {"key": "a", "value": 1}, idempotency_key="k")
    async with gateway.run(tenant="t", agent="bot", task="retry") as run:
        second = await run.call("save", {"key": "a", "value": 1}, idempotency_key="k")
    assert isinstance(first, Failed) and first.kind is FailureKind.TOOL_ERROR
    assert isinstance(second, Allowed) and not second.replayed
    assert len(effects.saved) == 1


async def test_a_settlement_in_flight_replays_here_and_is_in_progress_elsewhere(
    store_url: str, effects: Effects
) -> None:
    """A succeeded write's key is settled with the ledger's next batch: until then this
    process replays the result, another process (a second gateway on the same store) says
    ``in_progress`` rather than running the write again, and once written both replay."""
    from conftest import make_gateway

    here, there = make_gateway(store_url, effects), make_gateway(store_url, effects)
    try:
        # Hold the batch (the window under test): no flusher has started yet.
        assert here.svc.ledger._flusher is None
        here.svc.ledger._max_age_s = 60
        async with here.run(tenant="t", agent="bot", task="first") as run:
            first = await run.call("save", {"key": "a", "value": 1}, idempotency_key="k-fly")
            again = await run.call("save", {"key": "a", "value": 1}, idempotency_key="k-fly")
            assert isinstance(first, Allowed) and not first.replayed
            assert isinstance(again, Allowed) and again.replayed
            assert again.result == first.result
            async with there.run(tenant="t", agent="bot", task="elsewhere") as other:
                meanwhile = await other.call(
                    "save", {"key": "a", "value": 1}, idempotency_key="k-fly"
                )
            assert isinstance(meanwhile, Failed) and meanwhile.kind is FailureKind.IN_PROGRESS
        here.flush()
        async with there.run(tenant="t", agent="bot", task="after") as other:
            later = await other.call("save", {"key": "a", "value": 1}, idempotency_key="k-fly")
        assert isinstance(later, Allowed) and later.replayed and later.result == first.result
        assert len(effects.saved) == 1
        assert here.svc.settling.overlay("t", "k-fly", None) is None
    finally:
        here.close()
        there.close()
