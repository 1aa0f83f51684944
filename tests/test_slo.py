"""Live SLOs (issue 10 §3): the rollups sink, ``slo_report``, drift, ``warden slo`` and
``GET /v1/slo``, on SQLite and PostgreSQL.

The runs are real governed calls through a gateway whose clock is set per run, so each
run lands in a known hour; tools carry declared costs, so spend is exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from _inproc import running_app, tools_of

from warden import Gateway
from warden.spec import load_spec_text
from warden.store import Store
from warden.telemetry import bucket_of, rebuild, slo_report, upper_ms
from warden.telemetry._rollups import write_rows

SPEC = """
name: desk
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  bot: {scopes: [read, work]}
  weak: {scopes: [read]}
task_types:
  - name: triage
    success: the ticket was resolved
    success_when: actions.exists(a, a.tool == "resolve" && a.status == "executed")
  - name: chat
    success: the user got an answer
tools:
  lookup: {effect: read, scope: read, cost: {usd: 0.01}}
  resolve: {effect: write, scope: work, cost: {usd: 0.02}}
  flaky: {effect: read, scope: read, retry: {max_attempts: 1}}
policies:
  - name: no_vip
    when: tool.name == "resolve" && args.ticket == "vip"
    effect: deny
    reason: VIP tickets go to people
  - name: writes_alone
    when: tool.name == "resolve"
    effect: allow
    reason: resolving is routine
slo:
  success_rate: 0.8
  policy_violation_rate_max: 0.2
  cost_per_task_usd: 0.035
"""

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


def lookup(ticket: str) -> dict[str, str]:
    return {"ticket": ticket}


def resolve(ticket: str) -> dict[str, str]:
    return {"resolved": ticket}


def flaky(ticket: str) -> dict[str, str]:
    raise RuntimeError("backend down")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def desk(store: str | Store, clock: Clock, spec: str = SPEC) -> Gateway:
    return Gateway(
        load_spec_text(spec, "desk.yaml"), [lookup, resolve, flaky], store=store, clock=clock
    )


async def triage(gw: Gateway, tenant: str, ticket: str) -> str:
    run = gw.open_run(tenant=tenant, agent="bot", task="t", task_type="triage")
    await run.call("lookup", {"ticket": ticket})
    await run.call("resolve", {"ticket": ticket})
    run.finish("completed")
    return run.run_id


async def scenario(store_url: str) -> Gateway:
    """Four good triage runs 20 days ago; in the last hour one good, one denied by a rule
    (a violation, not a success), one chat run refused for scope and one tool failure."""
    clock = Clock(NOW - timedelta(days=20))
    gw = desk(store_url, clock)
    for i in range(4):
        await triage(gw, "acme", f"old-{i}")
    clock.now = NOW - timedelta(minutes=10)
    await triage(gw, "acme", "t1")
    await triage(gw, "acme", "vip")
    chat = gw.open_run(tenant="acme", agent="weak", task="c", task_type="chat")
    await chat.call("resolve", {"ticket": "x"})  # the weak agent lacks scope work
    await chat.call("flaky", {"ticket": "x"})
    chat.finish("completed")
    gw.flush()
    return gw


@pytest.fixture
async def desk_gw(store_url: str) -> AsyncIterator[Gateway]:
    gw = await scenario(store_url)
    yield gw
    gw.close()


def _group(report: Any, task_type: str) -> Any:
    (found,) = [g for g in report.groups if g.key["task_type"] == task_type]
    return found


async def test_figures_per_window_from_a_scripted_set_of_runs(desk_gw: Gateway) -> None:
    spec = desk_gw.spec.spec
    report = slo_report(desk_gw.store, targets={"desk": spec.slo}, now=NOW)
    assert [g.key for g in report.groups] == [
        {"workflow": "desk", "tenant": "acme", "task_type": "chat"},
        {"workflow": "desk", "tenant": "acme", "task_type": "triage"},
    ]
    triage_group = _group(report, "triage")
    hour, week, month = (triage_group.windows[w] for w in ("1h", "7d", "30d"))
    # last hour (and 7 d): t1 resolved (success), vip denied by no_vip (not a success)
    assert (hour.runs_started, hour.runs_finished, hour.successful) == (2, 2, 1)
    assert hour.success_rate == 0.5
    assert (hour.actions, hour.violations, hour.policy_violation_rate) == (4, 1, 0.25)
    assert hour.blocked_by_rule == {"no_vip": 1}
    assert str(hour.cost_usd) == "0.04" and str(hour.cost_per_task_usd) == "0.04"
    assert week.to_json() == hour.to_json()
    # 30 d adds the four old runs: 5 of 6 succeeded, $0.16 spent
    assert (month.runs_started, month.successful, month.actions) == (6, 5, 12)
    assert month.success_rate == round(5 / 6, 6)
    assert str(month.cost_usd) == "0.16" and str(month.cost_per_task_usd) == "0.032"
    assert month.policy_violation_rate == round(1 / 12, 6)
    # drift: 7 d against 30 d, percent
    assert triage_group.drift["success_rate"] == -40.0
    assert triage_group.drift["cost_per_task_usd"] == 25.0
    # the targets: 1 h and 7 d miss three, 30 d none
    missed = {(b.window, b.target) for b in triage_group.breaches}
    assert missed == {
        (w, t)
        for w in ("1h", "7d")
        for t in ("success_rate", "policy_violation_rate_max", "cost_per_task_usd")
    }
    chat = _group(report, "chat").windows["1h"]
    assert chat.denied == {"scope_denied": 1} and chat.tool_errors == {"flaky": 1}
    assert (chat.successful, chat.success_rate) == (1, 1.0)  # no check: outcome completed
    # executed calls have a latency; the percentiles are bucket bounds, p50 <= p95
    assert hour.p50_latency_ms is not None and hour.p95_latency_ms is not None
    assert hour.p50_latency_ms <= hour.p95_latency_ms


async def test_tenant_and_workflow_filters(desk_gw: Gateway) -> None:
    assert slo_report(desk_gw.store, tenant="globex", now=NOW).groups == ()
    assert slo_report(desk_gw.store, workflow="other", now=NOW).groups == ()
    assert len(slo_report(desk_gw.store, tenant="acme", now=NOW).groups) == 2
    # a month later, the old runs are out of every window
    later = slo_report(desk_gw.store, now=NOW + timedelta(days=25))
    assert {g.windows["30d"].runs_started for g in later.groups} == {2, 1}


async def test_rebuild_from_the_ledger_gives_the_same_figures(desk_gw: Gateway) -> None:
    before = slo_report(desk_gw.store, targets={"desk": desk_gw.spec.spec.slo}, now=NOW)
    seen = rebuild(desk_gw.store)
    assert seen > 0
    after = slo_report(desk_gw.store, targets={"desk": desk_gw.spec.spec.slo}, now=NOW)
    assert after.to_json() == before.to_json()


async def test_two_gateways_on_one_store_add_up(store_url: str) -> None:
    clock = Clock(NOW - timedelta(minutes=5))
    one, two = desk(store_url, clock), desk(store_url, clock)
    try:
        await triage(one, "acme", "a")
        await triage(two, "acme", "b")
        one.flush()
        two.flush()
        hour = _group(slo_report(one.store, now=NOW), "triage").windows["1h"]
        assert (hour.runs_started, hour.successful) == (2, 2)
    finally:
        one.close()
        two.close()


def test_latency_percentiles_come_from_merged_buckets(store_url: str) -> None:
    assert bucket_of(0) == 0 and upper_ms(bucket_of(1.0)) >= 1.0
    for ms in (0.02, 0.5, 3.0, 47.0, 1234.5):
        assert upper_ms(bucket_of(ms) - 1) < ms <= upper_ms(bucket_of(ms)) <= ms * 2**0.25 * 1.0001
    store = Store(store_url, create=True)
    try:
        hour = int(NOW.timestamp()) // 3600 * 3600
        rows: dict[Any, int] = {}
        # 90 calls at ~5 ms in one hour, 10 at ~200 ms in the next: p50 ~5, p95 ~200
        rows[("w", "t", "", hour - 3600, "latency", str(bucket_of(5.0)))] = 90
        rows[("w", "t", "", hour, "latency", str(bucket_of(200.0)))] = 10
        write_rows(store, rows)
        figures = slo_report(store, now=NOW).groups[0].windows["30d"]
        assert figures.p50_latency_ms == round(upper_ms(bucket_of(5.0)), 3)
        assert figures.p95_latency_ms == round(upper_ms(bucket_of(200.0)), 3)
        write_rows(store, rows)  # an upsert adds
        again = slo_report(store, now=NOW).groups[0].windows["30d"]
        assert again.p95_latency_ms == figures.p95_latency_ms
    finally:
        store.dispose()


# -- warden slo -------------------------------------------------------------------------


def warden(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warden", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


async def test_cli_json_and_table(desk_gw: Gateway, store_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "desk.yaml"
    spec.write_text(SPEC)
    at = NOW.isoformat()
    done = warden(
        "slo", "--store", store_url, "--spec", str(spec), "--at", at, "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    expected = slo_report(desk_gw.store, targets={"desk": desk_gw.spec.spec.slo}, now=NOW)
    assert body == expected.to_json()
    triage_group = body["groups"][1]
    assert triage_group["windows"]["30d"]["cost_per_task_usd"] == "0.032"
    assert triage_group["targets"] == {
        "success_rate": 0.8,
        "policy_violation_rate_max": 0.2,
        "cost_per_task_usd": 0.035,
    }
    # without --spec: figures, no targets, no breaches
    bare = json.loads(
        warden("slo", "--store", store_url, "--at", at, "--json", cwd=tmp_path).stdout
    )
    assert [g["breaches"] for g in bare["groups"]] == [[], []]
    table = warden("slo", "--store", store_url, "--spec", str(spec), "--at", at, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "desk / acme" in table.stdout and "triage" in table.stdout
    assert "50.0% ▼" in table.stdout  # the 7d success rate, below the target
    assert "drift 7d vs 30d, desk/acme/triage: success -40%" in table.stdout
    naive = warden("slo", "--store", store_url, "--at", "2026-03-10T12:30", cwd=tmp_path)
    assert naive.returncode != 0
    assert "no zone" in naive.stdout + naive.stderr
    table = warden("slo", "--store", store_url, "--window", "30d", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    bad = warden("slo", "--store", store_url, "--window", "2d", cwd=tmp_path)
    assert bad.returncode != 0
    assert "1h, 7d or 30d" in bad.stdout + bad.stderr
    rebuilt = warden("slo", "--store", store_url, "--rebuild", cwd=tmp_path)
    assert rebuilt.returncode == 0 and "rebuilt the rollups from" in rebuilt.stdout


# -- GET /v1/slo --------------------------------------------------------------------------


@pytest.fixture
async def app(store_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    tools = tools_of(tmp_path, "test_slo", ["lookup", "resolve", "flaky"])
    async with running_app(store_url, tmp_path, SPEC, tools) as made:
        yield made



async def test_http_slo_is_scoped_and_judged(
    app: Any, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    state = app.state.warden
    gw = state.gateway("desk")
    for tenant in ("acme", "globex"):
        run = gw.open_run(tenant=tenant, agent="bot", task="t", task_type="triage")
        await run.call("resolve", {"ticket": "vip"})  # denied by no_vip: no success
        run.finish("completed")
    gw.flush()
    auditor = client_for("auditor", "acme")
    r = await auditor.get("/v1/slo")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant"] == "acme"
    (group,) = body["groups"]
    assert group["key"] == {"workflow": "desk", "tenant": "acme", "task_type": "triage"}
    hour = group["windows"]["1h"]
    assert (hour["runs_finished"], hour["successful"], hour["violations"]) == (1, 0, 1)
    assert group["targets"]["success_rate"] == 0.8
    assert {(b["window"], b["target"]) for b in group["breaches"]} >= {("1h", "success_rate")}
    other = await auditor.get("/v1/slo", params={"tenant": "globex"})
    assert other.status_code == 403
    agent = await client_for("agent", "acme", agent="bot").get("/v1/slo")
    assert agent.status_code == 403
    admin = client_for("admin", "*")
    everyone = (await admin.get("/v1/slo")).json()
    assert {g["key"]["tenant"] for g in everyone["groups"]} == {"acme", "globex"}
    bad = await admin.get("/v1/slo", params={"tenant": "a b"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    schema = (await admin.get("/openapi.json")).json()
    ok = schema["paths"]["/v1/slo"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/SloReportOut"}
    figures = schema["components"]["schemas"]["SloFiguresOut"]["properties"]
    assert set(figures) == set(hour)


async def test_counts_the_store_refused_are_written_by_the_next_flush(store_url: str) -> None:
    from sqlalchemy import text

    clock = Clock(NOW - timedelta(minutes=5))
    gw = desk(store_url, clock)
    try:
        await triage(gw, "acme", "a")
        gw.svc.ledger.flush()
        with gw.store.write() as conn:  # the rollups table goes away for a while
            conn.execute(text("ALTER TABLE slo_rollups RENAME TO slo_rollups_away"))
        with pytest.raises(Exception, match="slo_rollups"):
            gw.rollups.flush()
        await triage(gw, "acme", "b")
        with gw.store.write() as conn:
            conn.execute(text("ALTER TABLE slo_rollups_away RENAME TO slo_rollups"))
        gw.flush()
        hour = _group(slo_report(gw.store, now=NOW), "triage").windows["1h"]
        assert (hour.runs_started, hour.successful, hour.actions) == (2, 2, 4)
        assert str(hour.cost_usd) == "0.06"
    finally:
        gw.close()
