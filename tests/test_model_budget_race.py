"""A budget holds under concurrency across replicas (issue 9 §3): many priced model calls
at once through the proxies of two server processes' states on one store (two apps, each
with its own engine, served in process through ``ASGITransport``), on SQLite and
PostgreSQL. Spend never passes the cap, and no call is refused while money is left.
(benchmarks/proxy runs the 1,000-request race through two real ``warden serve``.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from conftest import SPEC
from test_server_identity import make_api, serve  # noqa: F401 (fixtures)

from warden.ledger import iter_events
from warden.pipeline._models import input_token_bound
from warden.testing import FakeReply, FakeUpstream
from warden.testing._upstream import FakeRequest
from warden.upstream import Usage, parse_request

CAP = Decimal("0.05")
MODELS = """
models:
  small:
    upstream: openai
    model: small-1
    base_url: {url}
    retries: 0
    price: {{input_per_mtok: 1, output_per_mtok: 2}}
budgets:
  - {{name: daily, scope: tenant, period: calendar_day, usd: {cap}}}
"""


def worst_case_reply(request: FakeRequest) -> FakeReply:
    """Each call costs exactly its reservation (the hardest case for a cap): every output
    token it was allowed, and as many input tokens as Warden's bound (a real tokenizer
    counts fewer: that slack is released at settle, and is not what this test is about)."""
    allowed = request.body.get("max_tokens") or 1000
    bound = input_token_bound(parse_request("openai", request.body))
    return FakeReply("x", usage=Usage(bound, int(allowed)))


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(worst_case_reply) as up:
        yield up


async def race(start: Callable[..., Any], url: str) -> tuple[Decimal, list[Any]]:
    """60 priced calls at once through two server states on one store; the answers, what
    the answered calls cost, and the two servers."""
    spec = SPEC + MODELS.format(url=url, cap=CAP)
    first = await start(spec)
    second = await start(spec)
    key = first.key("bot", "agent", agent="bot")
    clients = [first.client(key), second.client(key)]

    async def ask(i: int) -> Any:
        body = {
            "model": "small",
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": f"question {i}"}],
        }
        return await clients[i % 2].post("/v1/chat/completions", json=body)

    answers = list(await asyncio.gather(*(ask(i) for i in range(60))))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) > 0, "the cap never bound: the test proves nothing"
    spent = sum(
        (Decimal(a.headers["x-warden-cost-usd"]) for a in answers if a.status_code == 200),
        Decimal(0),
    )
    assert spent <= CAP
    # no refusal while a call could still be paid: what is left is less than the cheapest
    # call (its input bound and one output token)
    cheapest = Decimal("0.000001") * 80 + Decimal("0.000002")
    assert CAP - spent < cheapest, (CAP - spent, statuses.count(200))
    return spent, [first, second]


async def test_two_replicas_never_overspend_a_shared_cap(
    serve: Callable[..., Any],  # noqa: F811
    fake: FakeUpstream,
) -> None:
    spent, servers = await race(serve, fake.openai_url)
    for api in servers:
        for gateway in api.app.state.warden.gateways.values():
            gateway.flush()
    store = servers[0].app.state.warden.store
    recorded = sum(
        (Decimal(e.payload["cost_usd"]) for e in iter_events(store) if e.type == "usage"),
        Decimal(0),
    )
    assert recorded == spent


def realistic_reply(request: FakeRequest) -> FakeReply:
    """Fewer input tokens than Warden's byte bound (as every real tokenizer counts), every
    output token allowed, and a little latency: calls in flight hold more than they spend."""
    allowed = request.body.get("max_tokens") or 1000
    return FakeReply("x", usage=Usage(10, int(allowed)), delay=0.05)


async def test_a_call_waits_for_over_counted_holds_rather_than_being_refused(
    serve: Callable[..., Any],  # noqa: F811
) -> None:
    with FakeUpstream(realistic_reply) as up:
        await race(serve, up.openai_url)
