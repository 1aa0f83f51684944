"""The agent's stated rationale for a call (issue 12 §2): given to the SDK, the sync facade,
the remote SDK or the HTTP API (fast path and route), recorded on ``action_requested``,
kept with an approval, shown on the approval, the run's timeline and its exports — as
text, never as markup — and never longer than 2,000 characters."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _console_seed import large_refund_tickets
from _stack import Stack
from conftest import Effects, make_gateway
from test_console import World, opened_world

from warden import Gateway, Pending
from warden.errors import InvalidInputError
from warden.events import ActionRequested, parse_event, strict_event
from warden.ledger import iter_events, verify
from warden.server._fastpath import _action

SCRIPT = "<script>alert('x')</script> ticket line 3 asks for $150"
BIG_PAY = {"order_id": "o1", "customer_id": "c1", "amount": 250.0}


def _requested(gateway: Gateway, run_id: str) -> list[dict[str, Any]]:
    gateway.flush()
    return [
        e.payload
        for e in iter_events(gateway.store, run_id=run_id)
        if e.type == "action_requested"
    ]


# -- in process ------------------------------------------------------------------------------


async def test_sdk_records_the_rationale_on_the_event_and_the_approval(gateway: Gateway) -> None:
    run = gateway.open_run(tenant="acme", agent="bot", task="rationale")
    pending = await run.call("pay", BIG_PAY, rationale="order o1 was paid twice")
    assert isinstance(pending, Pending)
    assert _requested(gateway, run.run_id)[0]["rationale"] == "order o1 was paid twice"
    record = gateway.approvals.get(pending.approval_id)
    assert record.evidence["agent_rationale"] == "order o1 was paid twice"


async def test_no_rationale_leaves_the_event_as_before(gateway: Gateway) -> None:
    run = gateway.open_run(tenant="acme", agent="bot", task="no rationale")
    await run.call("get_order", {"order_id": "o1"})
    assert "rationale" not in _requested(gateway, run.run_id)[0]


def test_sync_facade_takes_the_rationale(store_url: str, effects: Effects) -> None:
    gw = make_gateway(store_url, effects)
    with gw.sync() as sync, sync.run(tenant="acme", agent="bot", task="sync") as run:
        run.call("get_order", {"order_id": "o1"}, rationale="to check who paid")
        assert _requested(gw, run.run_id)[0]["rationale"] == "to check who paid"


@pytest.mark.parametrize("bad", ["x" * 2001, 42, ["why"]])
async def test_a_rationale_too_long_or_not_text_is_refused_naming_the_field(
    gateway: Gateway, bad: Any
) -> None:
    run = gateway.open_run(tenant="acme", agent="bot", task="bad rationale")
    with pytest.raises(InvalidInputError, match="rationale"):
        await run.call("get_order", {"order_id": "o1"}, rationale=bad)
    assert run.state.steps == 0  # refused before the call took a step


async def test_rationale_of_exactly_2000_characters_is_recorded(gateway: Gateway) -> None:
    run = gateway.open_run(tenant="acme", agent="bot", task="long rationale")
    await run.call("get_order", {"order_id": "o1"}, rationale="y" * 2000)
    assert len(_requested(gateway, run.run_id)[0]["rationale"]) == 2000


async def test_pii_in_the_rationale_is_tokenized_on_the_ledger(gateway: Gateway) -> None:
    run = gateway.open_run(tenant="acme", agent="bot", task="pii")
    await run.call("get_order", {"order_id": "o1"}, rationale="alice@shop.example asked")
    stated = _requested(gateway, run.run_id)[0]["rationale"]
    assert "alice@shop.example" not in stated
    assert stated.startswith("pii:email:")


async def test_the_chain_verifies_with_rationales_recorded(gateway: Gateway) -> None:
    run = gateway.open_run(tenant="acme", agent="bot", task="chain")
    await run.call("get_order", {"order_id": "o1"}, rationale=SCRIPT)
    gateway.flush()
    assert verify(gateway.store, tenant="acme").ok


def test_old_events_without_a_rationale_still_parse() -> None:
    old = {"action_id": "run_1.1", "tool": "t", "args": {}, "step": 1}
    parsed = parse_event("action_requested", old)
    assert isinstance(parsed, ActionRequested)
    assert parsed.rationale is None


def test_the_event_model_declares_the_rationale() -> None:
    new = {"action_id": "run_1.1", "tool": "t", "args": {}, "step": 1, "rationale": "why"}
    parsed = strict_event("action_requested", new)
    assert isinstance(parsed, ActionRequested)
    assert parsed.rationale == "why"


# -- over HTTP: the fast path and the route ---------------------------------------------------


def test_the_fast_path_parses_a_body_with_a_rationale_itself() -> None:
    body = json.dumps({"tool": "get_order", "args": {}, "rationale": "why"}).encode()
    parsed = _action(body)
    assert parsed is not None
    assert parsed.rationale == "why"


def _answers(stack: Stack) -> list[tuple[int, Any]]:
    bot = stack.client("bot")
    run_id = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "r"}).json()[
        "run_id"
    ]
    out = []
    for extra in ({"rationale": "fine"}, {"rationale": "z" * 2001}, {"rationale": 7}):
        r = bot.post(
            f"/v1/runs/{run_id}/actions",
            json={"tool": "get_order", "args": {"order_id": "o1"}, **extra},
        )
        body = r.json()
        out.append((r.status_code, [e["loc"] for e in body.get("errors", [])]))
    return out


def test_http_takes_the_rationale_and_refuses_a_bad_one_the_same_on_both_paths(
    make_stack: Any,
) -> None:
    fast, plain = _answers(make_stack()), _answers(make_stack(fast_path=False))
    assert fast == [
        (200, []),
        (422, [["body", "rationale"]]),
        (422, [["body", "rationale"]]),
    ]
    assert plain == fast


def test_http_records_the_rationale_and_the_approval_shows_it(stack: Stack) -> None:
    bot = stack.client("bot")
    run_id = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "r"}).json()[
        "run_id"
    ]
    pending = bot.post(
        f"/v1/runs/{run_id}/actions", json={"tool": "pay", "args": BIG_PAY, "rationale": SCRIPT}
    ).json()
    events = stack.client("audit").get(f"/v1/ledger/runs/{run_id}/events").json()["items"]
    requested = [e["payload"] for e in events if e["type"] == "action_requested"]
    assert requested[0]["rationale"] == SCRIPT
    approval = stack.client("lead").get(f"/v1/approvals/{pending['approval_id']}").json()
    assert approval["agent_rationale"] == SCRIPT
    assert "agent_rationale" not in approval["evidence"]


async def test_remote_sdk_sends_the_rationale(stack: Stack) -> None:
    async with Gateway.connect(stack.url, api_key=stack.keys["bot"], workflow="shop") as gateway:
        async with gateway.run(agent="bot", task="remote") as run:
            pending = await run.call("pay", BIG_PAY, rationale="the customer was charged twice")
            assert isinstance(pending, Pending)
            approval = stack.client("lead").get(f"/v1/approvals/{pending.approval_id}").json()
    assert approval["agent_rationale"] == "the customer was charged twice"


async def test_remote_sdk_refuses_a_long_rationale_before_sending(stack: Stack) -> None:
    async with Gateway.connect(stack.url, api_key=stack.keys["bot"], workflow="shop") as gateway:
        async with gateway.run(agent="bot", task="remote") as run:
            with pytest.raises(InvalidInputError, match="rationale"):
                await run.call("get_order", {"order_id": "o1"}, rationale="r" * 2001)


# -- the console: the approval, the timeline, the exports -------------------------------------


@pytest.fixture
async def world(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    monkeypatch.chdir(tmp_path)
    # the fast path on: the agent's calls below go through it (ASGI runs the middleware)
    async with opened_world(store_url, tmp_path) as made:
        yield made


async def refund_with_rationale(
    client: httpx.AsyncClient, ticket_id: str, rationale: str
) -> dict[str, Any]:
    """The demo agent's calls for one large refund ticket, the refund with ``rationale``."""

    async def act(tool: str, args: dict[str, Any], **extra: Any) -> Any:
        r = await client.post(
            f"/v1/runs/{run_id}/actions", json={"tool": tool, "args": args, **extra}
        )
        assert r.status_code == 200, r.text
        return r.json()

    opened = await client.post(
        "/v1/runs",
        json={"workflow": "refund_triage", "agent": "refund-bot", "task": f"ticket {ticket_id}"},
    )
    run_id = opened.json()["run_id"]
    ticket = (await act("get_ticket", {"ticket_id": ticket_id}))["result"]
    order = (await act("lookup_order", {"order_id": ticket["order_id"]}))["result"]
    answer: dict[str, Any] = await act(
        "issue_refund",
        {
            "order_id": order["id"],
            "customer_id": ticket["customer_id"],
            "amount": ticket["requested_amount"],
            "payment_method_id": order["payment_method_id"],
            "reason": ticket["subject"],
        },
        rationale=rationale,
    )
    answer["run_id"] = run_id
    return answer


async def test_console_shows_the_rationale_escaped_and_labelled(world: World) -> None:
    ticket = large_refund_tickets(world.tmp)[0]
    made = await refund_with_rationale(world.agent, ticket, SCRIPT)
    lead = await world.user("lead")
    page = (await lead.get(f"/ui/approvals/{made['approval_id']}")).text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; ticket line 3" in page
    assert "<script>alert" not in page
    assert "The agent's stated rationale, in its own words" in page


async def test_run_timeline_and_exports_carry_the_rationale(world: World) -> None:
    ticket = large_refund_tickets(world.tmp)[0]
    made = await refund_with_rationale(world.agent, ticket, SCRIPT)
    lead = await world.user("lead")
    timeline = (await lead.get(f"/ui/runs/{made['run_id']}")).text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in timeline
    assert "<script>alert" not in timeline
    report = (await lead.get(f"/ui/runs/{made['run_id']}/report.html")).text
    assert "<script>alert" not in report
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in report
    exported = (await lead.get(f"/ui/runs/{made['run_id']}/export.json")).json()
    refund = next(s for s in exported["steps"] if s["tool"] == "issue_refund")
    assert refund["agent_rationale"] == SCRIPT


async def test_an_approval_without_a_rationale_says_so(world: World) -> None:
    made = (await world.pending(1))[0]
    lead = await world.user("lead")
    page = (await lead.get(f"/ui/approvals/{made['approval_id']}")).text
    assert "The agent gave no rationale for this action." in page
