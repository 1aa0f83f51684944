"""The governed call, stage by stage, through the public SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import SPEC, Effects, make_gateway

from warden import Allowed, Denied, Drafted, Failed, FailureKind, Gateway, Pending, UsageError
from warden.ledger import iter_events
from warden.spec import load_spec_text
from warden.testing import FakeTool, ScriptedAgent


def _with_rule(rule: str) -> str:
    return SPEC.replace("policies:\n", f"policies:\n  - {rule}\n")


async def test_read_write_and_typed_results(gateway: Gateway, effects: Effects) -> None:
    async with gateway.run(tenant="t", agent="bot", task="basic") as run:
        read = await run.call("get_order", {"order_id": "o1"})
        write = await run.call("save", {"key": "a", "value": 2})
    assert isinstance(read, Allowed) and read.result["customer_id"] == "c1"
    assert isinstance(write, Allowed) and write.result == {"saved": "a", "n": 1}
    assert effects.saved == [{"key": "a", "value": 2}]


async def test_unknown_tool_is_denied_and_recorded(gateway: Gateway) -> None:
    async with gateway.run(tenant="t", agent="bot", task="hallucinate") as run:
        result = await run.call("transfer_all_money", {"to": "x"})
    assert isinstance(result, Denied) and result.kind is FailureKind.UNKNOWN_TOOL
    assert "get_order" in result.reasons[0]  # tells the agent what exists
    gateway.flush()
    denied = [e for e in iter_events(gateway.store, run_id=run.run_id) if e.type == "denied"]
    assert denied and denied[0].payload["kind"] == "unknown_tool"


async def test_schema_error_is_structured_and_recorded(gateway: Gateway, effects: Effects) -> None:
    async with gateway.run(tenant="t", agent="bot", task="bad args") as run:
        result = await run.call("save", {"key": 5, "extra": True})
    assert isinstance(result, Failed) and result.kind is FailureKind.SCHEMA_ERROR
    by_path = {e.path: e for e in result.errors}
    assert set(by_path) == {"key", "value", "extra"}
    assert by_path["key"].got == "5" and "string" in by_path["key"].expected
    assert by_path["value"].got == "nothing"
    assert effects.saved == []
    gateway.flush()
    failed = [e for e in iter_events(gateway.store, run_id=run.run_id) if e.type == "failed"]
    assert failed[0].payload["errors"][0]["path"] in {"key", "value", "extra"}


async def test_non_object_args_are_a_schema_error_not_a_crash(gateway: Gateway) -> None:
    async with gateway.run(tenant="t", agent="bot", task="junk") as run:
        result = await run.call("save", ["not", "a", "dict"])  # type: ignore[arg-type]
    assert isinstance(result, Failed) and result.kind is FailureKind.SCHEMA_ERROR


async def test_missing_scope_is_denied(gateway: Gateway, effects: Effects) -> None:
    async with gateway.run(tenant="t", agent="weak", task="scopes") as run:
        result = await run.call("save", {"key": "a", "value": 1})
    assert isinstance(result, Denied) and result.kind is FailureKind.SCOPE_DENIED
    assert effects.saved == []


def test_undeclared_agent_is_misuse(gateway: Gateway) -> None:
    with pytest.raises(UsageError, match="not declared"):
        gateway.open_run(tenant="t", agent="stranger", task="x")


async def test_deletes_are_denied_by_default(gateway: Gateway) -> None:
    async with gateway.run(tenant="t", agent="bot", task="delete") as run:
        result = await run.call("remove", {"key": "a"})
    assert isinstance(result, Denied) and result.rules == ("default:delete",)


async def test_delete_allowed_by_an_explicit_rule(store_url: str, effects: Effects) -> None:
    spec = _with_rule(
        '{name: allow_tmp, when: \'tool.name == "remove" && args.key.startsWith("tmp")\', '
        "effect: allow, reason: temp keys}"
    )
    gw = make_gateway(store_url, effects, spec)
    async with gw.run(tenant="t", agent="bot", task="delete") as run:
        ok = await run.call("remove", {"key": "tmp1"})
        no = await run.call("remove", {"key": "prod1"})
    gw.close()
    assert isinstance(ok, Allowed)
    assert isinstance(no, Denied)


@pytest.mark.parametrize(
    ("tier", "expected"),
    [("read_only", Denied), ("draft", Drafted), ("approve", Pending), ("autonomous", Allowed)],
)
async def test_autonomy_tiers_govern_writes(
    store_url: str, effects: Effects, tier: str, expected: type
) -> None:
    gw = make_gateway(store_url, effects, SPEC.replace("tier: autonomous", f"tier: {tier}"))
    async with gw.run(tenant="t", agent="bot", task="tier") as run:
        read = await run.call("get_order", {"order_id": "o1"})
        write = await run.call("save", {"key": "a", "value": 1})
    gw.close()
    assert isinstance(read, Allowed)  # reads are allowed in every tier
    assert isinstance(write, expected)
    assert effects.saved == ([{"key": "a", "value": 1}] if tier == "autonomous" else [])
    if tier == "draft":
        assert isinstance(write, Drafted) and write.args == {"key": "a", "value": 1}


async def test_facts_are_looked_up_and_recorded(gateway: Gateway, effects: Effects) -> None:
    async with gateway.run(tenant="t", agent="bot", task="facts") as run:
        own = await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 10})
        other = await run.call("pay", {"order_id": "o-bob", "customer_id": "c1", "amount": 10})
    assert isinstance(own, Allowed)
    assert isinstance(other, Denied) and other.rules == ("own_order_only",)
    gateway.flush()
    facts = [e.payload for e in iter_events(gateway.store, run_id=run.run_id) if e.type == "facts"]
    assert facts[1]["facts"]["order"]["customer_id"] == "bob"


async def test_evaluation_error_fails_closed(store_url: str, effects: Effects) -> None:
    spec = _with_rule(
        "{name: fragile, when: 'tool.name == \"save\" && args.value / 0 > 1', effect: allow, reason: never}"
    )
    gw = make_gateway(store_url, effects, spec)
    async with gw.run(tenant="t", agent="bot", task="fragile") as run:
        result = await run.call("save", {"key": "a", "value": 1})
    gw.close()
    assert isinstance(result, Denied) and result.rules == ("fragile",)
    assert "failing closed" in result.reasons[0]
    assert effects.saved == []


async def test_provenance_tags_recipient_from_untrusted_text(
    gateway: Gateway, effects: Effects
) -> None:
    async with gateway.run(tenant="t", agent="bot", task="injection") as run:
        await run.call("get_order", {"order_id": "o1"})  # trusted: alice@shop.example
        await run.call("get_doc", {"doc_id": "d1"})  # untrusted text naming mallory
        to_mallory = await run.call("message", {"to": "mallory@evil.example", "body": "invoice"})
        to_alice = await run.call("message", {"to": "alice@shop.example", "body": "invoice"})
    assert isinstance(to_mallory, Pending)
    assert to_mallory.reasons == ("recipient came from untrusted text",)
    assert isinstance(to_alice, Allowed)
    assert effects.sent == [{"to": "alice@shop.example"}]


async def test_runaway_loop_stops_the_run(gateway: Gateway) -> None:
    async with gateway.run(tenant="t", agent="bot", task="loop") as run:
        results = [await run.call("get_order", {"order_id": "o1"}) for _ in range(4)]
        after = await run.call("get_doc", {"doc_id": "d"})
    assert [type(r) for r in results] == [Allowed, Allowed, Denied, Denied]
    assert isinstance(results[2], Denied) and results[2].kind is FailureKind.RUNAWAY
    assert isinstance(after, Denied) and after.kind is FailureKind.RUNAWAY


async def test_max_steps(store_url: str, effects: Effects) -> None:
    gw = make_gateway(store_url, effects, SPEC.replace("max_steps: 50", "max_steps: 2"))
    async with gw.run(tenant="t", agent="bot", task="steps") as run:
        results = [await run.call("get_order", {"order_id": f"o{i}"}) for i in range(3)]
    gw.close()
    assert isinstance(results[2], Denied) and results[2].kind is FailureKind.MAX_STEPS


def _fake_spec(tool_yaml: str, policies: str = "") -> str:
    return f"""
name: fakes
version: "1"
owner: t
tier: autonomous
tools:
{tool_yaml}
{policies}
limits: {{max_retries_per_tool: 5, max_identical_calls: 10}}
"""


async def test_retries_idempotent_tool_with_backoff(store_url: str) -> None:
    flaky = FakeTool("flaky", params={"q": str}, returns={"ok": True}, fail_times=2)
    spec = load_spec_text(_fake_spec("  flaky: {retry: {max_attempts: 3, backoff: 1ms}}"))
    gw = Gateway(spec, [flaky.fn], store=store_url)
    async with gw.run(tenant="t", agent="a", task="retry") as run:
        result = await run.call("flaky", {"q": "x"})
    gw.close()
    assert isinstance(result, Allowed) and flaky.call_count == 3


async def test_non_idempotent_write_is_not_retried(store_url: str) -> None:
    charge = FakeTool("charge", params={"amount": int}, fail_times=1, effect="money")
    spec = load_spec_text(
        _fake_spec(
            "  charge: {retry: {max_attempts: 3, backoff: 1ms}}",
            # autonomous: a money tool runs alone only under an allow rule
            "policies:\n  - {name: charge_alone, when: 'true', effect: allow, reason: test}",
        )
    )
    gw = Gateway(spec, [charge.fn], store=store_url)
    async with gw.run(tenant="t", agent="a", task="no retry") as run:
        result = await run.call("charge", {"amount": 5})
    gw.close()
    assert isinstance(result, Failed) and result.kind is FailureKind.TOOL_ERROR
    assert charge.call_count == 1


async def test_timeout_is_classified(store_url: str) -> None:
    slow = FakeTool("slow", params={"q": str}, delay=1.0, timeout=0.05)
    gw = Gateway(load_spec_text(_fake_spec("  slow: {}")), [slow.fn], store=store_url)
    async with gw.run(tenant="t", agent="a", task="slow") as run:
        result = await run.call("slow", {"q": "x"})
    gw.close()
    assert isinstance(result, Failed) and result.kind is FailureKind.TIMEOUT


async def test_circuit_breaker_opens_after_consecutive_failures(store_url: str) -> None:
    down = FakeTool("down", params={"q": str}, fail_times=100)
    spec = load_spec_text(_fake_spec("  down: {circuit: {failure_threshold: 2, reset_after: 60s}}"))
    gw = Gateway(spec, [down.fn], store=store_url)
    async with gw.run(tenant="t", agent="a", task="breaker") as run:
        kinds = [(await run.call("down", {"q": str(i)})) for i in range(4)]
    gw.close()
    assert [r.kind for r in kinds if isinstance(r, Failed)] == [
        FailureKind.TOOL_ERROR,
        FailureKind.TOOL_ERROR,
        FailureKind.CIRCUIT_OPEN,
        FailureKind.CIRCUIT_OPEN,
    ]
    assert down.call_count == 2


async def test_kill_switch_in_process(gateway: Gateway, effects: Effects) -> None:
    gateway.switches.set("tool", "save", active=True, by="ops", reason="incident 7")
    async with gateway.run(tenant="t", agent="bot", task="killed") as run:
        killed = await run.call("save", {"key": "a", "value": 1})
        read = await run.call("get_order", {"order_id": "o1"})
    assert isinstance(killed, Denied) and killed.kind is FailureKind.KILLED
    assert "incident 7" in killed.reasons[0] and "ops" in killed.reasons[0]
    assert isinstance(read, Allowed)
    gateway.switches.set("tool", "save", active=False, by="ops", reason="fixed")
    async with gateway.run(tenant="t", agent="bot", task="revived") as run:
        assert isinstance(await run.call("save", {"key": "a", "value": 1}), Allowed)


def test_scripted_agent_and_sync_facade(gateway: Gateway, effects: Effects) -> None:
    agent = ScriptedAgent([("get_order", {"order_id": "o1"}), ("save", {"key": "s", "value": 3})])
    with gateway.sync() as sync, sync.run(tenant="t", agent="bot", task="sync") as run:
        results = agent.run_sync(run)
    assert [type(r) for r in results] == [Allowed, Allowed]
    assert effects.saved == [{"key": "s", "value": 3}]


async def test_sync_facade_inside_an_event_loop_is_a_clear_error(gateway: Gateway) -> None:
    with gateway.sync().run(tenant="t", agent="bot", task="wrong place") as run:
        with pytest.raises(UsageError, match="event loop"):
            run.call("get_order", {"order_id": "o1"})


async def test_spec_and_implementations_must_agree(store_url: str, effects: Effects) -> None:
    from conftest import shop_tools

    from warden import SpecError

    tools: list[Any] = shop_tools(effects)
    with pytest.raises(SpecError, match="no implementation"):
        Gateway(load_spec_text(SPEC), tools[:-1], store=store_url)

    async def extra(x: int) -> int:
        return x

    with pytest.raises(SpecError, match="does not declare"):
        Gateway(load_spec_text(SPEC), [*tools, extra], store=store_url)


async def test_concurrent_runs_in_one_gateway(gateway: Gateway, effects: Effects) -> None:
    async def one(i: int) -> Any:
        async with gateway.run(tenant="t", agent="bot", task=f"r{i}") as run:
            return await run.call("save", {"key": f"k{i}", "value": i})

    results = await asyncio.gather(*(one(i) for i in range(10)))
    assert all(isinstance(r, Allowed) for r in results)
    assert len(effects.saved) == 10
    assert gateway.verify_ledger().ok
