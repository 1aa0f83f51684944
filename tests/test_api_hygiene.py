"""API hygiene: cursor pagination on the list endpoints, unknown query parameters refused
with a problem naming them, and a workflow's tools published with their input schemas.

Served in process through ``httpx.ASGITransport``: the transport is not what is tested.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
from _inproc import Api, act, open_run
from _inproc import serve as serve  # the fixture
from conftest import SPEC

PROBLEM = "application/problem+json"
DEPOT = SPEC.replace("name: shop", "name: depot", 1)


async def _all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[list[Any]]:
    """Follow ``next`` from the first page to the last; each page's items."""
    pages: list[list[Any]] = []
    after: str | None = None
    while True:
        query = dict(params, **({"after": after} if after else {}))
        r = await client.get(path, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["items"])
        after = body["next"]
        if after is None:
            assert "link" not in r.headers
            return pages
        assert r.headers["link"].endswith('; rel="next"')
        assert f"after={after}" in r.headers["link"]


async def test_runs_are_paged_newest_first_without_repeats_or_gaps(
    serve: Callable[..., Any],
) -> None:
    api: Api = await serve()
    bot = api.as_("b", "agent", agent="bot")
    opened = [await open_run(bot) for _ in range(7)]
    admin = api.as_("a", "admin")
    pages = await _all_pages(admin, "/v1/runs", limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [r["run_id"] for page in pages for r in page]
    assert sorted(seen) == sorted(opened)
    started = [r["started_at"] for page in pages for r in page]
    assert started == sorted(started, reverse=True)


async def test_a_run_opened_between_pages_does_not_shift_the_next_page(
    serve: Callable[..., Any],
) -> None:
    api: Api = await serve()
    bot = api.as_("b", "agent", agent="bot")
    first = [await open_run(bot) for _ in range(4)]
    admin = api.as_("a", "admin")
    r = await admin.get("/v1/runs", params={"limit": 2})
    page1 = [x["run_id"] for x in r.json()["items"]]
    await open_run(bot)  # newer than everything: belongs before page 1, not in page 2
    r = await admin.get("/v1/runs", params={"limit": 2, "after": r.json()["next"]})
    page2 = [x["run_id"] for x in r.json()["items"]]
    assert sorted(page1 + page2) == sorted(first)


async def test_approvals_are_paged_soonest_deadline_first(serve: Callable[..., Any]) -> None:
    api: Api = await serve()
    bot = api.as_("b", "agent", agent="bot")
    run_id = await open_run(bot)
    for i in range(3):  # (the spec's window denies a fourth payment to one customer)
        answer = await act(
            bot, run_id, "pay", {"order_id": f"o{i}", "customer_id": "c1", "amount": 200.0 + i}
        )
        assert answer["status"] == "pending", answer
    lead = api.as_("l", "approver", approval_roles=["lead"])
    pages = await _all_pages(lead, "/v1/approvals", limit=2)
    assert [len(p) for p in pages] == [2, 1]
    ids = [a["approval_id"] for page in pages for a in page]
    assert len(set(ids)) == 3
    deadlines = [a["deadline"] for page in pages for a in page]
    assert deadlines == sorted(deadlines)


async def test_switches_keys_workflows_and_run_events_are_paged(serve: Callable[..., Any]) -> None:
    api: Api = await serve(SPEC, DEPOT)
    admin = api.as_("a", "admin", "*")
    for tool in ("pay", "save", "remove"):
        r = await admin.post(
            "/v1/switches",
            json={"scope": "tool", "target": tool, "active": True, "reason": "test"},
        )
        assert r.status_code == 200, r.text
    switches = await _all_pages(admin, "/v1/switches", limit=2)
    assert [sorted(s["target"] for s in p) for p in switches] == [["pay", "remove"], ["save"]]
    for i in range(3):
        api.key(f"k{i}", "auditor")
    keys = await _all_pages(admin, "/v1/keys", limit=2)
    names = [k["name"] for page in keys for k in page]
    assert sorted(names) == ["a", "k0", "k1", "k2"]
    flows = await _all_pages(admin, "/v1/workflows", limit=1)
    assert [[w["name"] for w in p] for p in flows] == [["depot"], ["shop"]]
    bot = api.as_("b", "agent", agent="bot")
    run_id = await open_run(bot)
    for i in range(3):
        await act(bot, run_id, "get_order", {"order_id": f"o{i}"})
    events = await _all_pages(admin, f"/v1/ledger/runs/{run_id}/events", limit=4)
    seqs = [e["seq"] for page in events for e in page]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(events) > 1


async def test_list_bodies_keep_their_shape_without_paging_parameters(
    serve: Callable[..., Any],
) -> None:
    api: Api = await serve()
    bot = api.as_("b", "agent", agent="bot")
    run_id = await open_run(bot)
    r = await api.as_("a", "admin").get("/v1/runs")
    assert r.json() == {"items": r.json()["items"], "next": None}
    assert [x["run_id"] for x in r.json()["items"]] == [run_id]


async def test_a_cursor_not_handed_out_is_a_422_naming_after(serve: Callable[..., Any]) -> None:
    api: Api = await serve()
    admin = api.as_("a", "admin")
    for path, cursor in [
        ("/v1/runs", "not-a-cursor!"),
        ("/v1/runs", "WyJ4Il0"),  # ["x"]: a list of the wrong width
        ("/v1/approvals", "WzEsMiwzXQ"),  # [1,2,3]: not times
        ("/v1/switches", "e30"),  # {}: not a list
        ("/v1/ledger/export", "-1"),
    ]:
        r = await admin.get(path, params={"after": cursor})
        assert (r.status_code, r.headers["content-type"]) == (422, PROBLEM), (path, r.text)
        assert ["query", "after"] in [e["loc"] for e in r.json()["errors"]], r.text


async def test_unknown_query_parameters_are_a_422_naming_them(serve: Callable[..., Any]) -> None:
    api: Api = await serve()
    admin = api.as_("a", "admin")
    r = await admin.get("/v1/runs", params={"limit": 2, "tenat": "acme"})
    assert (r.status_code, r.headers["content-type"]) == (422, PROBLEM)
    body = r.json()
    assert body["type"] == "urn:warden:problem:unknown-query-parameter"
    assert "'tenat'" in body["detail"]
    assert [e["loc"] for e in body["errors"]] == [["query", "tenat"]]
    # an alias is a declared name (?state= on approvals), and known names pass
    assert (await admin.get("/v1/approvals", params={"state": "pending"})).status_code == 200
    assert (await admin.get("/v1/runs", params={"limit": 2})).status_code == 200
    r = await admin.get("/v1/approvals", params={"approval_state": "pending", "x": "1"})
    assert [e["loc"] for e in r.json()["errors"]] == [
        ["query", "approval_state"],
        ["query", "x"],
    ]


async def test_the_governed_call_fast_path_refuses_unknown_query_parameters(
    serve: Callable[..., Any],
) -> None:
    api: Api = await serve()
    bot = api.as_("b", "agent", agent="bot")
    run_id = await open_run(bot)
    r = await bot.post(
        f"/v1/runs/{run_id}/actions",
        params={"dry_run": "true"},
        json={"tool": "save", "args": {"key": "k", "value": 1}},
    )
    assert (r.status_code, r.json()["errors"][0]["loc"]) == (422, ["query", "dry_run"])
    # refused before anything ran: the run took no step and nothing was saved
    r = await bot.get(f"/v1/runs/{run_id}")
    assert r.json()["steps"] == 0
    r = await bot.post(
        f"/v1/runs/{run_id}/actions", json={"tool": "save", "args": {"key": "k", "value": 1}}
    )
    # the first save this run made: the refused call saved nothing
    assert (r.json()["status"], r.json()["result"]["n"]) == ("allowed", 1), r.text


async def test_unknown_paths_stay_404_with_a_query_string(serve: Callable[..., Any]) -> None:
    api: Api = await serve()
    r = await api.as_("a", "admin").get("/v1/nothing-here", params={"x": "1"})
    assert r.status_code == 404


async def test_workflow_tools_publish_input_schemas_that_validate_arguments(
    serve: Callable[..., Any],
) -> None:
    api: Api = await serve()
    bot = api.as_("b", "agent", agent="bot", workflows=["shop"])
    r = await bot.get("/v1/workflows/shop/tools")
    assert r.status_code == 200, r.text
    tools = {t["name"]: t for t in r.json()["items"]}
    assert sorted(tools) == ["get_doc", "get_order", "message", "nap", "pay", "remove", "save"]
    pay = tools["pay"]
    assert (pay["effect"], pay["idempotent"], pay["kind"]) == ("money", False, "tool")
    schema = pay["input_schema"]
    jsonschema.Draft202012Validator.check_schema(schema)
    good = {"order_id": "o1", "customer_id": "c1", "amount": 5.0}
    jsonschema.validate(good, schema)
    assert not jsonschema.Draft202012Validator(schema).is_valid({"order_id": "o1"})
    # what the schema accepts, the server accepts
    run_id = await open_run(bot)
    assert (await act(bot, run_id, "pay", good))["status"] == "allowed"


async def test_workflow_tools_hidden_from_agent_keys_of_other_workflows(
    serve: Callable[..., Any],
) -> None:
    api: Api = await serve(SPEC, DEPOT)
    depot_bot = api.as_("d", "agent", agent="bot", workflows=["depot"])
    assert (await depot_bot.get("/v1/workflows/depot/tools")).status_code == 200
    r = await depot_bot.get("/v1/workflows/shop/tools")
    assert (r.status_code, r.headers["content-type"]) == (404, PROBLEM)
    r = await api.as_("a", "auditor").get("/v1/workflows/nope/tools")
    assert r.status_code == 404


def test_approvals_list_cli_reads_every_page_as_json_lines(make_stack: Callable[..., Any]) -> None:
    from typer.testing import CliRunner

    from warden.cli._app import app

    stack = make_stack()
    bot = stack.client("bot")
    run_id = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "t"}).json()[
        "run_id"
    ]
    for i in range(2):
        r = bot.post(
            f"/v1/runs/{run_id}/actions",
            json={"tool": "pay", "args": {"order_id": f"o{i}", "customer_id": "c1", "amount": 500.0}},
        )
        assert r.json()["status"] == "pending", r.text
    done = CliRunner().invoke(
        app,
        ["approvals", "list", "--url", stack.url, "--api-key", stack.keys["lead"], "--json"],
    )
    assert done.exit_code == 0, done.output
    listed = [json.loads(line) for line in done.output.splitlines()]
    assert sorted(a["args"]["order_id"] for a in listed) == ["o0", "o1"]


async def test_the_model_proxy_accepts_its_vendors_query_parameters(
    serve: Callable[..., Any],
) -> None:
    # Anthropic's SDK posts beta calls to /v1/messages?beta=true: not Warden's to refuse.
    api: Api = await serve()
    bot = api.as_("b", "agent", agent="bot")
    for path in ("/v1/messages", "/v1/chat/completions"):
        r = await bot.post(path, params={"beta": "true"}, json={})
        assert r.json()["type"] != "urn:warden:problem:unknown-query-parameter", r.text
