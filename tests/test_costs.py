"""Cost per successful outcome (issue 9 §5): ``warden.economics.cost_report``, the
``warden costs`` command and ``GET /v1/costs``, on SQLite and PostgreSQL.

The runs are real: model calls through the gateway against the fake upstream on loopback,
priced by a ``price:`` override so every figure is exact; runs of the previous window are
opened by a gateway whose clock is 8 days back. Success is judged as documented: a task
type's ``success_when`` over what the run recorded, else the outcome ``completed``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from _inproc import running_app
from conftest import SPEC as SHOP_SPEC

from warden import Gateway, SpecError
from warden.economics import CostReport, cost_report, parse_by, parse_since
from warden.errors import InvalidInputError
from warden.events import strict_event
from warden.ledger import iter_events
from warden.pipeline._success import recorded_actions
from warden.spec import load_spec_text
from warden.testing import FakeReply, FakeUpstream
from warden.upstream import Usage

TESTS = Path(__file__).parent

# small: $1 / $2 per million input / output tokens; large: $10 / $20.
SPEC = """
name: assist
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  bot: {{scopes: [llm]}}
task_types:
  - name: chat
    success: the user got an answer
  - name: triage
    success: the ticket was resolved
    success_when: actions.exists(a, a.tool == "resolve" && a.status == "executed")
  - name: broken
    success: never decidable
    success_when: actions[0].result.missing == 1
tools:
  resolve: {{effect: write}}
models:
  small:
    upstream: openai
    model: small-1
    base_url: {openai}
    credential: env:WARDEN_TEST_LLM_KEY
    scope: llm
    retries: 0
    price: {{input_per_mtok: 1, output_per_mtok: 2}}
  large:
    upstream: anthropic
    model: large-1
    base_url: {anthropic}
    credential: env:WARDEN_TEST_LLM_KEY
    scope: llm
    retries: 0
    price: {{input_per_mtok: 10, output_per_mtok: 20}}
"""

HELLO = [{"role": "user", "content": "hello"}]


def resolve(ticket: str) -> dict[str, str]:
    return {"resolved": ticket}


@dataclass
class Runs:
    """The run ids of the scenario, by the letter the figures below use."""

    ids: dict[str, str]


def gateway(store_url: str, fake: FakeUpstream, clock: datetime | None = None) -> Gateway:
    text = SPEC.format(openai=fake.openai_url, anthropic=fake.anthropic_url)
    if clock is None:
        return Gateway(load_spec_text(text, "assist.yaml"), [resolve], store=store_url)
    return Gateway(
        load_spec_text(text, "assist.yaml"), [resolve], store=store_url, clock=lambda: clock
    )


async def _run(
    gw: Gateway,
    fake: FakeUpstream,
    *,
    tenant: str,
    task_type: str,
    model: str,
    usage: Usage,
    outcome: str,
    resolves: bool = False,
) -> str:
    run = gw.open_run(tenant=tenant, agent="bot", task="t", task_type=task_type)
    fake.push(FakeReply("answer", usage=usage))
    await run.chat(model, HELLO, max_tokens=2000)
    if resolves:
        await run.call("resolve", {"ticket": "t1"})
    run.finish(outcome)
    return run.run_id


async def scenario(store_url: str, fake: FakeUpstream) -> Runs:
    """This window, tenant acme ($0.010 in all, 2 of 4 runs successful):

    - A chat, small 1000+500 tokens = $0.002, completed                 -> success
    - B chat, small 1000+500 = $0.002, failed                           -> no
    - C triage, large 100+50 = $0.002, resolved, reports failed         -> success (checked)
    - D triage, small 2000+1000 = $0.004, not resolved, reports completed -> no (checked)

    tenant globex: E chat, small 500+250 = $0.001, completed -> success.
    The previous window (8 days ago), acme: P, Q chat, small 1000+500 = $0.002 each, completed.
    """
    now = gateway(store_url, fake)
    old = gateway(store_url, fake, clock=datetime.now(UTC) - timedelta(days=8))
    ids = {
        "A": await _run(now, fake, tenant="acme", task_type="chat", model="small",
                        usage=Usage(1000, 500), outcome="completed"),
        "B": await _run(now, fake, tenant="acme", task_type="chat", model="small",
                        usage=Usage(1000, 500), outcome="failed"),
        "C": await _run(now, fake, tenant="acme", task_type="triage", model="large",
                        usage=Usage(100, 50), outcome="failed", resolves=True),
        "D": await _run(now, fake, tenant="acme", task_type="triage", model="small",
                        usage=Usage(2000, 1000), outcome="completed"),
        "E": await _run(now, fake, tenant="globex", task_type="chat", model="small",
                        usage=Usage(500, 250), outcome="completed"),
        "P": await _run(old, fake, tenant="acme", task_type="chat", model="small",
                        usage=Usage(1000, 500), outcome="completed"),
        "Q": await _run(old, fake, tenant="acme", task_type="chat", model="small",
                        usage=Usage(1000, 500), outcome="completed"),
    }  # fmt: skip
    for gw in (now, old):
        gw.flush()
        await gw.aclose()
    return Runs(ids)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("WARDEN_TEST_LLM_KEY", "sk-upstream")
    with FakeUpstream(api_key="sk-upstream") as up:
        yield up


@pytest.fixture
async def runs(store_url: str, fake: FakeUpstream) -> Runs:
    return await scenario(store_url, fake)


def report(store_url: str, **kw: Any) -> CostReport:
    from warden.store import Store

    store = Store(store_url)
    try:
        return cost_report(store, **kw)
    finally:
        store.dispose()


def groups(rep: CostReport) -> dict[tuple[str | None, ...], dict[str, Any]]:
    return {tuple(g.key.values()): g.to_json() for g in rep.groups}


# -- the success rule -------------------------------------------------------------------


def finished_events(store_url: str) -> dict[str, dict[str, Any]]:
    from warden.store import Store

    store = Store(store_url)
    try:
        found = {e.run_id or "": e.payload for e in iter_events(store) if e.type == "run_finished"}
    finally:
        store.dispose()
    for payload in found.values():
        strict_event("run_finished", payload)  # the event model declares what is written
    return found


async def test_a_success_check_decides_from_the_record_not_the_reported_outcome(
    store_url: str, runs: Runs
) -> None:
    finished = finished_events(store_url)
    # C reported "failed" but executed resolve: the check holds
    assert finished[runs.ids["C"]]["outcome"] == "failed"
    assert finished[runs.ids["C"]]["success"] is True
    # D reported "completed" and never resolved: the check does not hold
    assert finished[runs.ids["D"]]["outcome"] == "completed"
    assert finished[runs.ids["D"]]["success"] is False
    # chat declares no check: no verdict is recorded, the outcome decides
    assert "success" not in finished[runs.ids["A"]]


async def test_a_check_that_cannot_be_evaluated_is_a_failure_with_its_reason(
    store_url: str, fake: FakeUpstream
) -> None:
    gw = gateway(store_url, fake)
    run_id = await _run(gw, fake, tenant="acme", task_type="broken", model="small",
                        usage=Usage(10, 10), outcome="completed")  # fmt: skip
    await gw.aclose()
    payload = finished_events(store_url)[run_id]
    assert payload["success"] is False
    assert "could not be evaluated" in payload["success_error"]
    rep = report(store_url, by=("task_type",))
    assert groups(rep)[("broken",)]["current"]["successful"] == 0


async def test_the_check_waits_for_events_another_replica_has_not_committed(
    store_url: str, fake: FakeUpstream
) -> None:
    one, two = gateway(store_url, fake), gateway(store_url, fake)
    try:
        run = one.open_run(tenant="acme", agent="bot", task="t", task_type="triage")
        await run.call("resolve", {"ticket": "t1"})  # its `executed` waits in one's buffer
        run.save()  # the step count, as the server stores it after each call
        late = threading.Timer(0.3, one.flush)
        late.start()
        two.resume_run(run.run_id).finish("completed")  # another replica finishes the run
        late.join()
        assert finished_events(store_url)[run.run_id]["success"] is True
    finally:
        for gw in (one, two):
            await gw.aclose()


def test_what_a_success_check_sees_of_each_action() -> None:
    events: list[tuple[str, dict[str, Any]]] = [
        ("action_requested", {"action_id": "r.1", "tool": "pay", "step": 1, "args": {"n": 1}}),
        ("approval_requested", {"action_id": "r.1"}),
        ("approval_decided", {"action_id": "r.1", "args": {"n": 2}}),
        ("intent", {"action_id": "r.1", "args": {"n": 2}}),
        ("executed", {"action_id": "r.1", "result": {"ok": True}}),
        ("action_requested", {"action_id": "r.2", "tool": "mail", "step": 2, "args": {}}),
        ("approval_requested", {"action_id": "r.2"}),
        ("action_requested", {"action_id": "r.3", "tool": "pay", "step": 3, "args": {}}),
        ("reconciled", {"action_id": "r.3", "settled_as": "done", "result": 7}),
        ("action_requested", {"action_id": "r.4", "tool": "x", "step": 4, "args": {}}),
        ("denied", {"action_id": "r.4"}),
        ("executed", {"action_id": "elsewhere.1", "result": 1}),  # not requested here
    ]
    assert recorded_actions(events) == [
        {"tool": "pay", "step": 1, "args": {"n": 2}, "status": "executed", "result": {"ok": True}},
        {"tool": "mail", "step": 2, "args": {}, "status": "pending", "result": None},
        {"tool": "pay", "step": 3, "args": {}, "status": "executed", "result": 7},
        {"tool": "x", "step": 4, "args": {}, "status": "denied", "result": None},
    ]


def test_a_success_check_that_does_not_compile_names_its_line() -> None:
    text = SPEC.format(openai="http://127.0.0.1:9/v1", anthropic="http://127.0.0.1:9").replace(
        'a.status == "executed")', 'a.status === "executed")'
    )
    with pytest.raises(SpecError) as caught:
        Gateway(load_spec_text(text, "assist.yaml"), [resolve], store="sqlite:///:memory:")
    [issue] = caught.value.issues
    assert issue.path == "task_types[1].success_when" and issue.line == 13, issue


# -- the report -------------------------------------------------------------------------


async def test_cost_per_successful_run_counts_every_run_of_the_group(
    store_url: str, runs: Runs
) -> None:
    rep = report(store_url, by=("tenant",))
    acme = groups(rep)[("acme",)]
    now = acme["current"]
    assert now["runs"] == 4 and now["successful"] == 2 and now["open_runs"] == 0
    assert now["cost_usd"] == "0.01"
    assert now["cost_per_success"] == "0.005"  # $0.010 of all four runs / 2 successful
    assert now["cost_per_run_p50"] == "0.002" and now["cost_per_run_p95"] == "0.004"
    assert now["input_tokens"] == 4100 and now["output_tokens"] == 2050
    assert now["tokens"] == 6150 and now["calls"] == 4
    assert now["cache_hits"] == 0 and now["saved_usd"] == "0"
    globex = groups(rep)[("globex",)]
    assert globex["current"]["cost_per_success"] == "0.001"
    assert globex["previous"] is None and globex["flagged"] == []
    # dearest first; the total counts every run once
    assert [g.key["tenant"] for g in rep.groups] == ["acme", "globex"]
    total = rep.total.to_json()["current"]
    assert total["runs"] == 5 and total["successful"] == 3 and total["cost_usd"] == "0.011"


async def test_week_over_week_growth_above_20_percent_is_flagged(
    store_url: str, runs: Runs
) -> None:
    rep = report(store_url, by=("tenant",), tenant="acme")
    [acme] = rep.groups
    assert acme.previous is not None
    before = acme.previous.to_json()
    assert before["runs"] == 2 and before["successful"] == 2
    assert before["cost_per_success"] == "0.002" and before["cost_per_run_p95"] == "0.002"
    # $0.005 against $0.002 per success; p95 $0.004 against $0.002; p50 unchanged
    assert acme.change == {
        "cost_per_run_p50": 0.0,
        "cost_per_run_p95": 100.0,
        "cost_per_success": 150.0,
    }
    assert acme.flagged == ("cost_per_run_p95", "cost_per_success")
    # a shorter window leaves the old runs out of both windows: nothing to compare
    day = report(store_url, by=("tenant",), tenant="acme", since=timedelta(days=1))
    assert day.groups[0].previous is None and day.groups[0].flagged == ()


async def test_spend_without_success_is_flagged_where_runs_succeeded_before(
    store_url: str, fake: FakeUpstream, tmp_path: Path
) -> None:
    old = gateway(store_url, fake, clock=datetime.now(UTC) - timedelta(days=8))
    now = gateway(store_url, fake)
    await _run(old, fake, tenant="acme", task_type="chat", model="small",
               usage=Usage(1000, 500), outcome="completed")  # fmt: skip
    await _run(now, fake, tenant="acme", task_type="chat", model="small",
               usage=Usage(1000, 500), outcome="failed")  # fmt: skip
    for gw in (old, now):
        gw.flush()
        await gw.aclose()
    [group] = report(store_url).groups
    assert group.current.cost_per_success is None and group.change["cost_per_success"] is None
    assert group.flagged == ("cost_per_success",)
    done = warden("costs", "--store", store_url, cwd=tmp_path)
    assert "▲ workflow=assist: cost per successful run none succeeded (spent $0.002)" in (
        done.stdout.splitlines()
    ), done.stdout


async def test_grouped_by_route_and_task_type(store_url: str, runs: Runs) -> None:
    by_route = groups(report(store_url, by=("route",), tenant="acme"))
    # small answered A, B, D ($0.008, A succeeded); large answered C ($0.002, succeeded)
    assert by_route[("small",)]["current"]["runs"] == 3
    assert by_route[("small",)]["current"]["cost_per_success"] == "0.008"
    assert by_route[("small",)]["change"]["cost_per_success"] == 300.0
    assert by_route[("large",)]["current"]["cost_per_success"] == "0.002"
    assert by_route[("large",)]["previous"] is None
    by_task = groups(report(store_url, by=("task_type",), tenant="acme"))
    assert by_task[("chat",)]["current"]["cost_per_success"] == "0.004"  # A + B, A succeeded
    assert by_task[("triage",)]["current"]["cost_per_success"] == "0.006"  # C + D, C succeeded
    both = groups(report(store_url, by=("workflow", "route")))
    assert both[("assist", "small")]["current"]["runs"] == 4  # E (globex) too


async def test_open_runs_count_their_spend_and_never_succeed(
    store_url: str, fake: FakeUpstream
) -> None:
    gw = gateway(store_url, fake)
    run = gw.open_run(tenant="acme", agent="bot", task="t", task_type="chat")
    fake.push(FakeReply("answer", usage=Usage(1000, 500)))
    await run.chat("small", HELLO, max_tokens=2000)
    other = gw.open_run(tenant="acme", agent="bot", task="t", task_type="chat")  # no call
    other.finish("completed")
    gw.flush()
    now = report(store_url).groups[0].current
    assert now.runs == 2 and now.open_runs == 1 and now.successful == 1
    assert now.cost_usd == Decimal("0.002") and now.cost_per_success == Decimal("0.002")
    assert now.cost_per_run_p50 == Decimal(0)  # the run without a model call cost $0
    by_route = groups(report(store_url, by=("route",)))
    assert set(by_route) == {("small",), (None,)}
    await gw.aclose()


async def test_cache_hits_and_savings_are_counted_when_recorded(
    store_url: str, fake: FakeUpstream
) -> None:
    gw = gateway(store_url, fake)
    run_id = await _run(gw, fake, tenant="acme", task_type="chat", model="small",
                        usage=Usage(1000, 500), outcome="completed")  # fmt: skip
    # What the response cache will record: a call answered from the cache, at $0.
    gw.ledger.append(run_id, "acme", run_id, "usage", {
        "action_id": run_id + ".9", "model": "small", "route": {}, "usage": None,
        "cost_usd": "0", "priced_by": "spec", "cached": True, "saved_usd": "0.002",
    })  # fmt: skip
    gw.flush()
    now = report(store_url).groups[0].current
    assert now.cache_hits == 1 and now.saved_usd == Decimal("0.002")
    assert now.cost_usd == Decimal("0.002") and now.calls == 2
    await gw.aclose()


def test_bad_windows_and_dimensions_are_refused() -> None:
    assert parse_since("7d") == timedelta(days=7) and parse_since("90m") == timedelta(minutes=90)
    assert parse_by("workflow, route") == ("workflow", "route")
    for bad in ("0d", "week", "400d", "", "99999999999999999d"):
        with pytest.raises(InvalidInputError, match="since"):
            parse_since(bad)
    for bad in ("colour", "workflow,workflow", ","):
        with pytest.raises(InvalidInputError, match="by"):
            parse_by(bad)


# -- GET /v1/costs ----------------------------------------------------------------------


@pytest.fixture
async def app(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(tmp_path / "effects.db"))
    tools = f"{TESTS / 'server_tools.py'}:tools"
    async with running_app(store_url, tmp_path, SHOP_SPEC, tools) as made:
        yield made



async def test_http_report_is_scoped_to_the_keys_tenant(
    runs: Runs, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    auditor = client_for("auditor", "acme")
    r = await auditor.get("/v1/costs", params={"by": "tenant"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant"] == "acme" and body["since"] == "7d" and body["by"] == ["tenant"]
    assert [g["key"] for g in body["groups"]] == [{"tenant": "acme"}]
    assert body["groups"][0]["current"]["cost_per_success"] == "0.005"
    assert body["groups"][0]["flagged"] == ["cost_per_run_p95", "cost_per_success"]
    assert body["total"]["current"]["runs"] == 4  # globex's run is not seen
    other = await auditor.get("/v1/costs", params={"tenant": "globex"})
    assert other.status_code == 403 and "globex" not in other.text
    root = client_for("admin", "*")
    everyone = (await root.get("/v1/costs", params={"by": "tenant"})).json()
    assert [g["key"]["tenant"] for g in everyone["groups"]] == ["acme", "globex"]
    one = (await root.get("/v1/costs", params={"tenant": "globex", "by": "route"})).json()
    assert one["groups"][0]["key"] == {"route": "small"}
    assert one["total"]["current"]["cost_usd"] == "0.001"


async def test_http_refuses_other_roles_and_bad_queries(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    agent = client_for("agent", "acme", agent="bot")
    assert (await agent.get("/v1/costs")).status_code == 403
    auditor = client_for("auditor", "acme")
    for params in ({"since": "a week"}, {"since": "0d"}, {"by": "colour"}):
        r = await auditor.get("/v1/costs", params=params)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert next(iter(params)) in r.json()["detail"]
    empty = await auditor.get("/v1/costs")
    assert empty.status_code == 200 and empty.json()["groups"] == []


async def test_the_route_is_documented(app: Any) -> None:
    schema = app.openapi()
    op = schema["paths"]["/v1/costs"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CostReportOut"
    }
    assert {p["name"] for p in op["parameters"]} == {"since", "by", "tenant"}


# -- warden costs -----------------------------------------------------------------------


def warden(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warden", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "COLUMNS": "100"},
    )


async def test_cli_table_and_json(store_url: str, runs: Runs, tmp_path: Path) -> None:
    done = warden("costs", "--store", store_url, "--by", "tenant", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines), done.stdout
    [acme] = [line for line in lines if line.lstrip().startswith("acme")]
    assert acme.split()[:6] == ["acme", "4", "2", "$0.002", "$0.004", "$0.005"], acme
    assert acme.split()[-2:] == ["+150%", "▲"], acme
    assert "▲ tenant=acme: cost per run p95 +100.0%; cost per successful run +150.0%" in lines
    as_json = warden("costs", "--store", store_url, "--tenant", "globex", "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["tenant"] == "globex" and body["by"] == ["workflow"]
    assert body["groups"][0]["key"] == {"workflow": "assist"}
    assert body["groups"][0]["current"]["cost_per_success"] == "0.001"
    wide = warden("costs", "--store", store_url, "--by", "workflow,tenant,route,task_type",
                  cwd=tmp_path)  # fmt: skip
    assert wide.returncode == 0, wide.stderr
    assert all(len(line) <= 100 for line in wide.stdout.splitlines()), wide.stdout
    rows = wide.stdout.splitlines()
    assert any(r.split()[:4] == ["workflow", "tenant", "route", "task_type"] for r in rows)
    # split by route too: triage is C on large and D on small, never $0.006 together
    triage = [r.split()[:7] for r in rows if " triage " in r]
    assert sorted(triage) == [
        ["assist", "acme", "large", "triage", "1", "1", "$0.002"],
        ["assist", "acme", "small", "triage", "1", "0", "$0.004"],
    ]


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'w.db'}"
    for args, word in (
        (("--since", "soon"), "since"),
        (("--by", "colour"), "by"),
    ):
        done = warden("costs", "--store", store, *args, cwd=tmp_path)
        assert done.returncode == 1, done.stdout
        assert len(done.stderr.strip().splitlines()) == 1 and word in done.stderr, done.stderr
    missing = warden("costs", cwd=tmp_path)
    assert missing.returncode == 1 and "no store" in missing.stderr
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    from warden.store import Store

    Store(empty).dispose()
    none = warden("costs", "--store", empty, cwd=tmp_path)
    assert none.returncode == 0 and "no runs started in the last 7d" in none.stdout


async def test_tools_declared_costs_are_spend_under_the_tools_route(store_url: str) -> None:
    from warden.economics._reports import TOOLS_ROUTE
    from warden.spec import load_spec_text

    text = """
name: priced
version: "1"
owner: a@b
tier: autonomous
agents: {bot: {scopes: []}}
tools:
  search: {effect: read, cost: {usd: 0.005}}
"""

    def search(q: str) -> dict[str, Any]:
        return {"hits": [q]}

    gw = Gateway(load_spec_text(text, "priced.yaml"), [search], store=store_url)
    async with gw.run(tenant="acme", agent="bot", task="t") as run:
        await run.call("search", {"q": "a"})
        await run.call("search", {"q": "b"})
    gw.flush()
    await gw.aclose()
    found = groups(report(store_url, by=("route",)))
    assert found[(TOOLS_ROUTE,)]["current"]["cost_usd"] == "0.01"
    assert found[(TOOLS_ROUTE,)]["current"]["runs"] == 1
