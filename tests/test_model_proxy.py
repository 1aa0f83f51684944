"""The model proxy over HTTP (issue 9 §1): an agent using the official ``openai`` and
``anthropic`` clients points them at ``warden serve`` and gets governed, priced, budgeted
calls. A real server on loopback in front of the fake upstream on loopback (the transport
is part of what is tested), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from _stack import Stack
from conftest import SPEC

from warden.ledger import iter_events
from warden.store import Store
from warden.testing import FakeReply, FakeUpstream
from warden.upstream import Usage

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

MODELS = """
models:
  small:
    upstream: openai
    model: small-1
    base_url: {openai}
    credential: env:WARDEN_TEST_LLM_KEY
    retries: 0
    price: {{input_per_mtok: 1, output_per_mtok: 2}}
  large:
    upstream: anthropic
    model: large-1
    base_url: {anthropic}
    credential: env:WARDEN_TEST_LLM_KEY
    retries: 0
    price: {{input_per_mtok: 10, output_per_mtok: 20}}
routes:
  auto:
    - when: has(hints.confidence) && hints.confidence < 0.7
      model: large
    - model: small
budgets:
  - {{name: per_run, scope: run, usd: {per_run}}}
"""
POLICY = """  - name: large_runs_cold
    when: tool.name == "model:large" && has(args.temperature) && args.temperature > 1.0
    effect: deny
    reason: the large model runs cold
"""
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key="sk-upstream-secret") as up:
        yield up


@pytest.fixture
def served(
    make_stack: Callable[..., Stack], fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Stack]:
    monkeypatch.setenv("WARDEN_TEST_LLM_KEY", "sk-upstream-secret")

    def start(per_run: str = "1") -> Stack:
        spec = SPEC.replace("policies:\n", "policies:\n" + POLICY, 1) + MODELS.format(
            openai=fake.openai_url, anthropic=fake.anthropic_url, per_run=per_run
        )
        return make_stack(spec)

    return start


def oai(stack: Stack, who: str = "bot", **headers: str) -> Any:
    return openai.OpenAI(
        base_url=stack.url + "/v1",
        api_key=stack.keys[who],
        max_retries=0,
        default_headers=headers or None,
    )


def usage_events(stack: Stack, expect: int = 1) -> list[dict[str, Any]]:
    """The usage events on the ledger, once ``expect`` of them are there: a stream is
    settled when the server's side of it ends, just after the client read its end."""
    state = stack.app.state.warden
    store = Store(stack.store_url)
    try:
        for _ in range(100):
            for gateway in state.gateways.values():
                gateway.flush()
            found = [e.payload for e in iter_events(store) if e.type == "usage"]
            if len(found) >= expect:
                return found
            time.sleep(0.05)
        return found
    finally:
        store.dispose()


def test_the_openai_client_gets_a_governed_priced_reply(
    served: Callable[..., Stack], fake: FakeUpstream
) -> None:
    stack = served()
    fake.push(FakeReply("hi from small", usage=Usage(1000, 500)))
    raw = oai(stack).chat.completions.with_raw_response.create(
        model="small", messages=HELLO, max_tokens=600
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "hi from small"
    assert reply.usage.prompt_tokens == 1000
    assert raw.headers["x-warden-run"].startswith("run_")
    assert Decimal(raw.headers["x-warden-cost-usd"]) == Decimal("0.002")
    sent = fake.requests[-1]
    # the upstream got Warden's key and the upstream's model id, never the agent's key
    assert sent.credential == "sk-upstream-secret" and sent.body["model"] == "small-1"
    assert stack.keys["bot"] not in str(sent.headers)
    [event] = usage_events(stack)
    assert event["cost_usd"] == "0.002"


def test_a_stream_passes_through_and_its_usage_is_recorded(
    served: Callable[..., Stack], fake: FakeUpstream
) -> None:
    stack = served()
    fake.push(FakeReply("streamed words arrive in pieces", usage=Usage(300, 60), chunk_chars=5))
    chunks = list(
        oai(stack).chat.completions.create(
            model="small", messages=HELLO, max_tokens=100, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed words arrive in pieces"
    assert len(chunks) > 4
    # the client did not ask for usage: Warden asked the upstream, and kept it to itself
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)
    [event] = usage_events(stack)
    assert event["streamed"] and event["usage"]["output_tokens"] == 60
    assert Decimal(event["cost_usd"]) == Decimal("0.00042")


def test_the_anthropic_client_works_against_either_upstream(
    served: Callable[..., Stack], fake: FakeUpstream
) -> None:
    stack = served()
    client = anthropic.Anthropic(base_url=stack.url, api_key=stack.keys["bot"], max_retries=0)
    fake.push(FakeReply("from large", usage=Usage(20, 10)), FakeReply("from small"))
    large = client.messages.create(model="large", max_tokens=50, messages=HELLO)
    assert large.content[0].text == "from large" and fake.requests[-1].wire == "anthropic"
    small = client.messages.create(model="small", max_tokens=50, messages=HELLO)
    assert small.content[0].text == "from small" and fake.requests[-1].wire == "openai"
    with client.messages.stream(model="large", max_tokens=50, messages=HELLO) as stream:
        assert "".join(stream.text_stream) == "ok"


def test_refusals_come_in_the_clients_error_shape(
    served: Callable[..., Stack], fake: FakeUpstream
) -> None:
    stack = served(per_run="0.0001")
    client = oai(stack)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="large", messages=HELLO, temperature=1.5)
    assert "runs cold" in denied.value.message
    # $0.0001 cannot pay for the input bound of a large call
    with pytest.raises(openai.RateLimitError) as broke:
        client.chat.completions.create(
            model="large", messages=[{"role": "user", "content": "x" * 50}], max_tokens=10
        )
    assert broke.value.body["code"] == "budget_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert not fake.requests


def test_one_conversation_is_one_run_and_a_named_run_is_used(
    served: Callable[..., Stack], fake: FakeUpstream
) -> None:
    stack = served()
    client = oai(stack)
    first = client.chat.completions.with_raw_response.create(model="small", messages=HELLO)
    follow = [
        *HELLO,
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and then?"},
    ]
    second = client.chat.completions.with_raw_response.create(model="small", messages=follow)
    assert first.headers["x-warden-run"] == second.headers["x-warden-run"]
    other = client.chat.completions.with_raw_response.create(
        model="small", messages=[{"role": "user", "content": "a new topic"}]
    )
    assert other.headers["x-warden-run"] != first.headers["x-warden-run"]
    # a run opened through the runs API, named by header
    bot = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.keys['bot']}"})
    opened = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "t"})
    run_id = opened.json()["run_id"]
    named = oai(stack, **{"X-Warden-Run": run_id}).chat.completions.with_raw_response.create(
        model="small", messages=HELLO
    )
    assert named.headers["x-warden-run"] == run_id
    # another tenant's agent cannot use it
    with pytest.raises(openai.ConflictError):
        oai(stack, "other-bot", **{"X-Warden-Run": run_id}).chat.completions.create(
            model="small", messages=HELLO
        )
    bot.close()


def test_a_route_is_asked_for_by_name_with_hints_in_a_header(
    served: Callable[..., Stack], fake: FakeUpstream
) -> None:
    stack = served()
    fake.push(FakeReply("from large"), FakeReply("from small"))
    unsure = oai(stack, **{"X-Warden-Hints": '{"confidence": 0.3}'})
    assert (
        unsure.chat.completions.create(model="auto", messages=HELLO).choices[0].message.content
        == "from large"
    )
    sure = oai(stack).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "2+2"}]
    )
    assert sure.choices[0].message.content == "from small"
    with pytest.raises(openai.BadRequestError):
        oai(stack, **{"X-Warden-Hints": "not json"}).chat.completions.create(
            model="auto", messages=HELLO
        )


def test_a_finished_conversation_run_is_replaced_by_a_new_one(
    served: Callable[..., Stack], fake: FakeUpstream
) -> None:
    stack = served()
    client = oai(stack)
    first = client.chat.completions.with_raw_response.create(model="small", messages=HELLO)
    run_id = first.headers["x-warden-run"]
    bot = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.keys['bot']}"})
    assert bot.post(f"/v1/runs/{run_id}/finish", json={"outcome": "completed"}).status_code == 200
    bot.close()
    follow = [*HELLO, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    again = client.chat.completions.with_raw_response.create(model="small", messages=follow)
    assert again.headers["x-warden-run"] != run_id
    third = client.chat.completions.with_raw_response.create(
        model="small",
        messages=[
            *follow,
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "and?"},
        ],
    )
    assert third.headers["x-warden-run"] == again.headers["x-warden-run"]
