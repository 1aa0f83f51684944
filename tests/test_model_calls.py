"""Model calls through the governed pipeline (issue 9 §1-§3): ``run.chat`` in process,
against the fake OpenAI- and Anthropic-compatible upstream on loopback, on SQLite and
PostgreSQL. Switches, policy, budgets (reserve, cap, settle, refuse, reroute), usage and
cost on the ledger and on the run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from warden import Denied, Failed, FailureKind, Gateway
from warden.ledger import iter_events
from warden.pipeline._models import ChatResult, ChatStreamResult
from warden.spec import load_spec_text
from warden.testing import FakeReply, FakeUpstream
from warden.upstream import Usage

# $1 per million input tokens, $2 per million output tokens: 1,000 in + 500 out = $0.002
SPEC = """
name: assist
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  bot: {{scopes: [llm]}}
  nollm: {{scopes: []}}
tools:
  lookup: {{effect: read}}
models:
  small:
    upstream: openai
    model: small-1
    base_url: {openai}
    credential: env:WARDEN_TEST_LLM_KEY
    scope: llm
    retries: 0
    price: {{input_per_mtok: 1, output_per_mtok: 2}}
    escalate_to: medium
    cache: {{ttl: 1h}}
  medium:
    upstream: openai
    model: medium-1
    base_url: {openai}
    credential: env:WARDEN_TEST_LLM_KEY
    retries: 0
    price: {{input_per_mtok: 5, output_per_mtok: 10}}
  large:
    upstream: anthropic
    model: large-1
    base_url: {anthropic}
    credential: env:WARDEN_TEST_LLM_KEY
    scope: llm
    retries: 0
    price: {{input_per_mtok: 10, output_per_mtok: 20}}
    fallback: [small]
routes:
  auto:
    - when: has(hints.confidence) && hints.confidence < 0.7
      model: large
      reason: the agent is unsure
    - when: run.task_type == "never"
      model: medium
    - model: small
escalation:
  approver_roles: [lead]
policies:
  - name: long_large_answers_need_approval
    when: tool.name == "model:large" && has(args.max_tokens) && args.max_tokens > 5000
    effect: require_approval
    reason: a long answer from the large model
    approvers: lead
  - name: no_hot_large
    when: tool.name == "model:large" && has(args.temperature) && args.temperature > 1.0
    effect: deny
    reason: the large model runs cold
budgets:
{budgets}
"""


def lookup(key: str) -> dict[str, str]:
    return {"key": key}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key="sk-upstream") as up:
        yield up


def gateway(
    store_url: str,
    fake: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    budgets: str = "  []",
    **options: Any,
) -> Gateway:
    monkeypatch.setenv("WARDEN_TEST_LLM_KEY", "sk-upstream")
    text = SPEC.format(openai=fake.openai_url, anthropic=fake.anthropic_url, budgets=budgets)
    return Gateway(load_spec_text(text, "assist.yaml"), [lookup], store=store_url, **options)


def usage_events(gw: Gateway) -> list[dict[str, Any]]:
    gw.flush()
    return [e.payload for e in iter_events(gw.store) if e.type == "usage"]


HELLO = [{"role": "user", "content": "hello"}]


async def test_a_model_call_is_governed_priced_and_recorded(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway(store_url, fake, monkeypatch)
    fake.push(FakeReply("hi there", usage=Usage(1000, 500)))
    async with gw.run(tenant="acme", agent="bot", task="greet") as run:
        result = await run.chat("small", HELLO, max_tokens=600)
        assert isinstance(result, ChatResult), result
        assert result.text == "hi there"
        assert result.usage == Usage(1000, 500)
        assert result.cost_usd == Decimal("0.002")
        assert result.body["choices"][0]["message"]["content"] == "hi there"
        assert run.state.cost_nusd == 2_000_000 and run.state.tokens == 1500
    sent = fake.requests[-1]
    assert sent.body["model"] == "small-1" and sent.credential == "sk-upstream"
    [event] = usage_events(gw)
    assert event["cost_usd"] == "0.002" and event["usage"]["output_tokens"] == 500
    assert event["priced_by"] == "spec" and event["route"]["model"] == "small-1"
    await gw.aclose()


async def test_the_anthropic_upstream_answers_an_openai_shaped_call(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway(store_url, fake, monkeypatch)
    fake.push(FakeReply("bonjour", usage=Usage(100, 50)))
    async with gw.run(tenant="acme", agent="bot", task="greet") as run:
        result = await run.chat("large", HELLO, max_tokens=100)
    assert isinstance(result, ChatResult), result
    assert result.text == "bonjour"
    assert result.cost_usd == Decimal("0.002")  # 100 x $10/M + 50 x $20/M
    assert fake.requests[-1].wire == "anthropic"
    await gw.aclose()


async def test_switches_scope_and_policy_apply_to_model_calls(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway(store_url, fake, monkeypatch)
    async with gw.run(tenant="acme", agent="nollm", task="t") as run:
        refused = await run.chat("small", HELLO)
        assert isinstance(refused, Denied) and refused.kind is FailureKind.SCOPE_DENIED
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        hot = await run.chat("large", HELLO, temperature=1.5, max_tokens=10)
        assert isinstance(hot, Denied) and hot.rules == ("no_hot_large",)
        gw.switches.set("tool", "model:small", active=True, by="oncall", reason="bad model")
        killed = await run.chat("small", HELLO)
        assert isinstance(killed, Denied) and killed.kind is FailureKind.KILLED
        assert not fake.requests, "no denied call reached the upstream"
    await gw.aclose()


async def test_a_budget_caps_max_tokens_refuses_and_never_overspends(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = "  - {name: per_run, scope: run, usd: 0.01}"
    gw = gateway(store_url, fake, monkeypatch, budgets)
    fake.push(*(FakeReply("x", usage=Usage(1000, 2000)) for _ in range(5)))
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        first = await run.chat("small", HELLO, max_tokens=100_000)
        assert isinstance(first, ChatResult), first
        # $0.01 pays for < 5,000 output tokens at $2/M: the request was capped and said so
        assert first.capped_max_tokens is not None and first.capped_max_tokens < 5000
        assert fake.requests[-1].body["max_tokens"] == first.capped_max_tokens
        spent = Decimal(0)
        results: list[Any] = [first]
        while isinstance(results[-1], ChatResult):
            spent += results[-1].cost_usd
            results.append(await run.chat("small", HELLO, max_tokens=2000))
        refused = results[-1]
        assert isinstance(refused, Denied) and refused.kind is FailureKind.BUDGET_EXCEEDED
        assert any("per_run" in r and "left" in r for r in refused.reasons), refused.reasons
        assert spent <= Decimal("0.01")
    await gw.aclose()


async def test_an_exhausted_budget_routes_to_the_declared_model(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # large is 10x the price of small: a budget that cannot pay even large's input routes to small
    budgets = "  - {name: cheap, scope: run, usd: 0.0005, on_exhausted: 'route:small'}"
    gw = gateway(store_url, fake, monkeypatch, budgets)
    fake.push(FakeReply("small answer", usage=Usage(10, 10)))
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        result = await run.chat("large", HELLO, max_tokens=1000)
    assert isinstance(result, ChatResult), result
    assert result.model == "small" and result.rerouted and "cheap" in result.rerouted
    assert fake.requests[-1].wire == "openai" and fake.requests[-1].body["model"] == "small-1"
    [event] = usage_events(gw)
    assert event["model"] == "small" and event["rerouted"]
    await gw.aclose()


async def test_a_streamed_call_is_passed_through_and_settled_from_the_stream(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = "  - {name: per_run, scope: run, usd: 1}"
    gw = gateway(store_url, fake, monkeypatch, budgets)
    fake.push(FakeReply("a streamed answer", usage=Usage(200, 100), chunk_chars=4))
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        stream = await run.chat("small", HELLO, stream=True, max_tokens=100)
        assert isinstance(stream, ChatStreamResult), stream
        events = [event async for event in stream]
        assert len(events) > 3  # passed on chunk by chunk
        assert stream.text == "a streamed answer"
        assert stream.settled and stream.usage == Usage(200, 100)
        assert stream.cost_usd == Decimal("0.0004")
        assert run.state.tokens == 300
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    [event] = usage_events(gw)
    assert event["streamed"] and event["cost_usd"] == "0.0004"
    await gw.aclose()


async def test_a_stream_without_usage_is_charged_its_reservation_not_zero(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = "  - {name: per_run, scope: run, usd: 1}"
    gw = gateway(store_url, fake, monkeypatch, budgets)
    fake.push(FakeReply("no usage here", omit_usage=True))
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        stream = await run.chat("small", HELLO, stream=True, max_tokens=100)
        assert isinstance(stream, ChatStreamResult)
        async for _ in stream:
            pass
        assert stream.usage is None
        assert stream.cost_usd is not None and stream.cost_usd > 0
    [event] = usage_events(gw)
    assert event["usage"] is None and Decimal(event["cost_usd"]) > 0
    await gw.aclose()


async def test_an_upstream_failure_releases_the_reservation(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = "  - {name: per_run, scope: run, usd: 0.01}"
    gw = gateway(store_url, fake, monkeypatch, budgets)
    fake.push(FakeReply.failure(500))
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        failed = await run.chat("small", HELLO, max_tokens=4000)
        assert isinstance(failed, Failed) and failed.kind is FailureKind.UPSTREAM_ERROR
        # the whole budget is there again: a call needing most of it still runs
        fake.push(FakeReply("ok", usage=Usage(10, 10)))
        again = await run.chat("small", HELLO, max_tokens=4000)
        assert isinstance(again, ChatResult) and again.capped_max_tokens is None, again
    await gw.aclose()


def test_a_model_without_price_does_not_load(tmp_path: Path) -> None:
    from warden.errors import SpecError

    text = """
name: x
version: "1"
owner: a@b
models:
  mystery: {upstream: openai, model: no-such-model-anywhere-1}
"""
    with pytest.raises(SpecError, match="price"):
        Gateway(load_spec_text(text, "x.yaml"), [], store=f"sqlite:///{tmp_path / 'w.db'}")


async def test_a_budget_threshold_alert_is_enqueued_once_with_the_spend(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from sqlalchemy import select

    from warden.store._tables import outbox

    budgets = "  - {name: daily, scope: tenant, period: calendar_day, usd: 0.01, alert_at: [0.5]}"
    gw = gateway(store_url, fake, monkeypatch, budgets)
    fake.push(*(FakeReply("x", usage=Usage(1000, 1000)) for _ in range(3)))  # $0.003 each
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        for i in range(3):  # $0.003, $0.006 (crosses 50 %), $0.009
            asked = [{"role": "user", "content": f"question {i}"}]
            assert isinstance(await run.chat("small", asked, max_tokens=1000), ChatResult)
    with gw.store.read() as conn:
        rows = conn.execute(select(outbox.c.kind, outbox.c.payload)).all()
    alerts = [json.loads(p) for k, p in rows if k == "budget_threshold"]
    assert len(alerts) == 1, alerts
    assert alerts[0]["budget"] == "daily" and alerts[0]["threshold"] == "0.5"
    assert alerts[0]["model"] == "small" and alerts[0]["unit"] == "usd"
    await gw.aclose()


async def test_a_route_picks_the_model_from_the_agents_hints(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway(store_url, fake, monkeypatch)
    fake.push(FakeReply("careful", usage=Usage(10, 10)), FakeReply("quick", usage=Usage(10, 10)))
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        unsure = await run.chat("auto", HELLO, hints={"confidence": 0.4}, max_tokens=20)
        assert isinstance(unsure, ChatResult) and unsure.model == "large"
        assert fake.requests[-1].wire == "anthropic"
        sure = await run.chat("auto", [{"role": "user", "content": "2+2?"}], max_tokens=20)
        assert isinstance(sure, ChatResult) and sure.model == "small"
    events = usage_events(gw)
    assert "the agent is unsure" in events[0]["routed"] and "-> large" in events[0]["routed"]
    assert events[1]["routed"].endswith("rule 3 -> small")
    await gw.aclose()


async def test_a_failing_upstream_falls_back_along_the_chain(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = "  - {name: per_run, scope: run, usd: 1}"
    gw = gateway(store_url, fake, monkeypatch, budgets)
    fake.push(FakeReply.failure(503), FakeReply("from the fallback", usage=Usage(100, 100)))
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        result = await run.chat("large", HELLO, max_tokens=200)
    assert isinstance(result, ChatResult), result
    assert result.model == "small" and result.text == "from the fallback"
    assert [s.reason for s in result.route.skipped] == ["server_error"]
    assert result.cost_usd == Decimal("0.0003")  # priced as the model that answered
    [event] = usage_events(gw)
    assert event["model"] == "small" and event["route"]["skipped"] == ["server_error"]
    await gw.aclose()


SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "label", "schema": {"type": "object", "required": ["label"]}},
}


async def test_an_invalid_structured_output_is_retried_then_escalated(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = "  - {name: per_run, scope: run, usd: 1}"
    gw = gateway(store_url, fake, monkeypatch, budgets)
    fake.push(
        FakeReply("not json", usage=Usage(10, 10)),
        FakeReply('{"nope": 1}', usage=Usage(10, 10)),
        FakeReply('{"label": "refund"}', usage=Usage(10, 10)),
    )
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        result = await run.chat("small", HELLO, max_tokens=20, response_format=SCHEMA)
        assert isinstance(result, ChatResult), result
        assert result.model == "medium" and result.text == '{"label": "refund"}'
        # every attempt was paid for: 2 on small ($0.00003 each), 1 on medium ($0.00015)
        assert run.state.cost_nusd == 30_000 + 30_000 + 150_000
    assert [r.body["model"] for r in fake.requests] == ["small-1", "small-1", "medium-1"]
    events = usage_events(gw)
    assert [e["model"] for e in events] == ["small", "small", "medium"]
    assert "not JSON" in events[2]["escalated"][0]
    assert "schema" in events[2]["escalated"][1]
    await gw.aclose()


async def test_a_structured_stream_is_held_back_until_it_is_valid(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway(store_url, fake, monkeypatch)
    fake.push(FakeReply("{bad", chunk_chars=2), FakeReply('{"label": "x"}', chunk_chars=2))
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        stream = await run.chat(
            "small", HELLO, stream=True, max_tokens=20, response_format=SCHEMA
        )
        assert isinstance(stream, ChatStreamResult), stream
        events = [e async for e in stream]
        text = "".join(
            (json.loads(e.data)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
            for e in events
            if e.data.startswith("{")
        )
        assert text == '{"label": "x"}'  # the invalid first answer never reached the agent
    await gw.aclose()


def test_routes_and_chains_name_declared_models_and_compile(tmp_path: Path) -> None:
    from warden.errors import SpecError

    text = """
name: x
version: "1"
owner: a@b
models:
  small:
    upstream: openai
    model: m
    price: {input_per_mtok: 1, output_per_mtok: 1}
    fallback: [nowhere]
    escalate_to: nothing
routes:
  small:
    - model: small
  auto:
    - when: hints.confidence <
      model: small
    - model: ghost
"""
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "x.yaml")
    message = str(caught.value)
    for expected in (
        "x.yaml:10: models.small.fallback[0]",
        "x.yaml:11: models.small.escalate_to",
        "'small' is already a model's name",
        "routes.auto[0].when: CEL",
        "routes.auto[1].model",
    ):
        assert expected in message, message


async def test_the_cache_answers_exact_repeats_per_tenant_until_its_ttl(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    gw = gateway(store_url, fake, monkeypatch, clock=lambda: now[0])
    fake.push(*(FakeReply(f"answer {i}", usage=Usage(1000, 500)) for i in range(4)))
    cold = {"temperature": 0, "max_tokens": 600}

    async def ask(tenant: str, question: str = "what is 2+2?", **params: Any) -> ChatResult:
        async with gw.run(tenant=tenant, agent="bot", task="t") as run:
            asked = [{"role": "user", "content": question}]
            result = await run.chat("small", asked, **{**cold, **params})
        assert isinstance(result, ChatResult), result
        return result

    first = await ask("acme")
    again = await ask("acme")
    assert (first.cached, again.cached) == (False, True)
    assert again.text == first.text and again.cost_usd == 0
    assert len(fake.requests) == 1
    assert not (await ask("globex")).cached  # never across tenants
    assert not (await ask("acme", temperature=0.7)).cached  # not cacheable
    now[0] += timedelta(hours=2)
    assert not (await ask("acme")).cached  # past its TTL
    assert len(fake.requests) == 4
    hits = [e for e in usage_events(gw) if e["cached"]]
    assert len(hits) == 1 and hits[0]["saved_usd"] == "0.002" and hits[0]["cost_usd"] == "0"
    await gw.aclose()


async def test_tools_declare_a_cost_fixed_or_read_from_the_result(
    store_url: str, tmp_path: Path
) -> None:
    text = """
name: costs
version: "1"
owner: a@b
tier: autonomous
agents: {bot: {scopes: []}}
tools:
  search: {effect: read, cost: {usd: 0.005}}
  enrich: {effect: read, cost: {from_result: billing.usd}}
"""

    def search(q: str) -> dict[str, Any]:
        return {"hits": [q]}

    def enrich(q: str) -> dict[str, Any]:
        return {"billing": {"usd": 0.25}} if q != "broken" else {"billing": {}}

    gw = Gateway(load_spec_text(text, "costs.yaml"), [search, enrich], store=store_url)
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        await run.call("search", {"q": "a"})
        await run.call("enrich", {"q": "b"})
        await run.call("enrich", {"q": "broken"})
        assert run.state.cost_nusd == 255_000_000  # $0.005 + $0.25; the unknown one not 0
    gw.flush()
    executed = [e.payload for e in iter_events(gw.store) if e.type == "executed"]
    assert [e.get("cost_usd") for e in executed] == ["0.005", "0.25", None]
    assert "billing.usd" in executed[2]["cost_problem"]
    await gw.aclose()


async def test_a_base_url_can_come_from_the_environment(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = """
name: envurl
version: "1"
owner: a@b
agents: {bot: {scopes: []}}
models:
  m: {upstream: openai, model: m-1, base_url: "env:WARDEN_TEST_MODEL_URL",
      credential: "env:WARDEN_TEST_LLM_KEY", retries: 0,
      price: {input_per_mtok: 1, output_per_mtok: 1}}
"""
    monkeypatch.setenv("WARDEN_TEST_LLM_KEY", "sk-upstream")
    monkeypatch.delenv("WARDEN_TEST_MODEL_URL", raising=False)
    gw = Gateway(load_spec_text(text, "envurl.yaml"), [], store=store_url)
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        unset = await run.chat("m", HELLO)
        assert isinstance(unset, Failed)
        assert "WARDEN_TEST_MODEL_URL" in unset.detail
    await gw.aclose()
    monkeypatch.setenv("WARDEN_TEST_MODEL_URL", fake.openai_url)
    gw = Gateway(load_spec_text(text, "envurl.yaml"), [], store=store_url)
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        assert isinstance(await run.chat("m", HELLO), ChatResult)
    await gw.aclose()


async def test_a_model_call_can_wait_for_approval_and_run_when_approved(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warden import Allowed, Pending

    budgets = "  - {name: per_run, scope: run, usd: 1}"
    gw = gateway(store_url, fake, monkeypatch, budgets)
    fake.push(FakeReply("a long answer", usage=Usage(100, 6000)))
    run = gw.open_run(tenant="acme", agent="bot", task="t")
    pending = await run.chat("large", HELLO, max_tokens=8000, stream=True)
    assert isinstance(pending, Pending), pending
    assert not fake.requests  # nothing reached the upstream, nothing is reserved
    await gw.approve(pending.approval_id, approver="lead@x", roles=["lead"], rationale="ok")
    done = await gw.execute_approved(pending.approval_id, actor="key:ops")
    assert isinstance(done, Allowed), done
    # one reply (nobody reads a stream of an approved call), in the shape it was asked in
    assert done.result["choices"][0]["message"]["content"] == "a long answer"
    assert fake.requests[-1].body.get("stream") in (None, False)
    [event] = usage_events(gw)
    assert event["cost_usd"] == "0.121"  # 100 x $10/M + 6,000 x $20/M
    run.finish("completed")
    await gw.aclose()


async def test_an_approved_anthropic_shaped_call_keeps_its_shape(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warden import Allowed, Pending

    gw = gateway(store_url, fake, monkeypatch)
    fake.push(FakeReply("claude says", usage=Usage(10, 10)))
    run = gw.open_run(tenant="acme", agent="bot", task="t")
    pending = await run.chat(
        "large", HELLO, wire="anthropic", system="be brief", max_tokens=6000
    )
    assert isinstance(pending, Pending), pending
    await gw.approve(pending.approval_id, approver="lead@x", roles=["lead"], rationale="ok")
    done = await gw.execute_approved(pending.approval_id)
    assert isinstance(done, Allowed), done
    assert done.result["content"][0]["text"] == "claude says"
    assert fake.requests[-1].body["system"] == "be brief" and "wire" not in fake.requests[-1].body
    run.finish("completed")
    await gw.aclose()


async def test_a_conversation_grown_in_place_is_not_a_runaway(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The usual agent loop appends to the list it sent; each call is a new one.
    gw = gateway(store_url, fake, monkeypatch)
    messages = [{"role": "user", "content": "think it over"}]
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        for _ in range(4):
            result = await run.chat("small", messages, max_tokens=20)
            assert isinstance(result, ChatResult), result
            messages.append({"role": "assistant", "content": result.text})
            messages.append({"role": "user", "content": "once more"})
        # a true repeat is still one
        same = [{"role": "user", "content": "again"}]
        repeats = [await run.chat("small", same, max_tokens=20) for _ in range(3)]
    assert isinstance(repeats[-1], Denied) and repeats[-1].kind is FailureKind.RUNAWAY
    await gw.aclose()


async def test_a_request_the_upstream_kind_cannot_take_is_a_clear_schema_error(
    store_url: str, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = "  - {name: per_run, scope: run, usd: 1}"
    gw = gateway(store_url, fake, monkeypatch, budgets)
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        # OpenAI's response_format has no Anthropic equivalent: refused before any request
        failed = await run.chat("large", HELLO, max_tokens=20, response_format=SCHEMA)
        assert isinstance(failed, Failed) and failed.kind is FailureKind.SCHEMA_ERROR, failed
        assert "large" in failed.detail and "response_format" in failed.detail
        assert not fake.requests
        # its reservation was released: the whole budget is there for the next call
        fake.push(FakeReply("ok", usage=Usage(10, 10)))
        assert isinstance(await run.chat("small", HELLO, max_tokens=20), ChatResult)
    await gw.aclose()
