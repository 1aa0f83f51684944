"""The dashboards (issue 12 §2): ``GET /v1/dashboard`` and ``/ui/dashboards`` over ASGI, on
SQLite and PostgreSQL.

Runs are real governed calls through a gateway whose clock is set per group of runs (in the
last hour, 3 days ago, 20 days ago), with tools of declared costs, so every figure is known;
the expected figures are computed here from the list of what was seeded, not read back.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from _inproc import running_app, tools_of
from test_console import Browser
from test_costs import fake, scenario

from warden import Gateway, SpecError
from warden.economics import cost_report
from warden.server import ServerSettings, create_app
from warden.spec import load_spec, load_spec_text
from warden.store import Store
from warden.telemetry import bucket_of, dashboard, upper_ms
from warden.telemetry._rollups import write_rows
from warden.testing import FakeUpstream

SPEC = """
name: desk
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  bot: {scopes: [read, work]}
task_types:
  - name: triage
    success: the ticket was resolved
    success_when: actions.exists(a, a.tool == "resolve" && a.status == "executed")
tools:
  lookup: {effect: read, scope: read, cost: {usd: 0.01}}
  resolve: {effect: write, scope: work, cost: {usd: 0.02}}
  refund: {effect: write, scope: work, cost: {usd: 0.05}}
  flaky: {effect: read, scope: read, retry: {max_attempts: 1}}
policies:
  - name: no_vip
    when: tool.name == "resolve" && args.ticket == "vip"
    effect: deny
    reason: VIP tickets go to people
  - name: big_refund
    when: tool.name == "refund" && args.amount > 100
    effect: require_approval
    reason: large refunds need a lead
  - name: writes_alone
    when: tool.name in ["resolve", "refund"]
    effect: allow
    reason: routine
escalation:
  approver_roles: [lead]
  sla: 1h
slo:
  success_rate: 0.8
roi:
  human_minutes_per_task: 9
  human_cost_per_hour_usd: 42
  escalation_minutes: 4
"""


def lookup(ticket: str) -> dict[str, str]:
    return {"ticket": ticket}


def resolve(ticket: str) -> dict[str, str]:
    return {"resolved": ticket}


def refund(ticket: str, amount: int) -> dict[str, Any]:
    return {"refunded": amount}


def flaky(ticket: str) -> dict[str, str]:
    raise RuntimeError("backend down")


@dataclass(frozen=True)
class Kind:
    """What one seeded run does, and so what it adds to the figures."""

    succeeded: bool
    actions: int
    executed: int
    spend: Decimal
    escalations: int = 0
    blocked: int = 0  # by no_vip
    tool_errors: int = 0  # of flaky


KINDS = {
    "good": Kind(True, 2, 2, Decimal("0.03")),
    "vip": Kind(False, 2, 1, Decimal("0.01"), blocked=1),
    "escalated": Kind(False, 2, 1, Decimal("0.01"), escalations=1),
    "flaky": Kind(False, 1, 0, Decimal(0), tool_errors=1),
}
#: (tenant, age, kind, how many)
SEEDED = [
    ("acme", timedelta(minutes=10), "good", 3),
    ("acme", timedelta(minutes=10), "vip", 1),
    ("acme", timedelta(minutes=10), "escalated", 1),
    ("acme", timedelta(minutes=10), "flaky", 1),
    ("globex", timedelta(minutes=10), "good", 2),
    ("acme", timedelta(days=3), "good", 2),
    ("acme", timedelta(days=3), "vip", 1),
    ("acme", timedelta(days=20), "good", 4),
]
#: the window's length, with the hour the rollups round down to (ages are far from edges)
LENGTHS = {"1h": timedelta(hours=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DECISION = timedelta(minutes=2)


def expected(window: str, tenant: str | None = None) -> dict[str, Any]:
    """The figures the seeded runs imply for ``window``, computed from ``SEEDED``."""
    runs = [
        (KINDS[kind], n)
        for tn, age, kind, n in SEEDED
        if age < LENGTHS[window] and (tenant is None or tn == tenant)
    ]
    finished = sum(n for _, n in runs)
    successful = sum(n for k, n in runs if k.succeeded)
    actions = sum(k.actions * n for k, n in runs)
    escalations = sum(k.escalations * n for k, n in runs)
    spend = sum((k.spend * n for k, n in runs), Decimal(0))
    executed = sum(k.executed * n for k, n in runs)
    errors = sum(k.tool_errors * n for k, n in runs)
    minutes = successful * 9 - escalations * 4
    avoided = (Decimal(minutes) * 42 / 60).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return {
        "finished": finished,
        "successful": successful,
        "success_rate": round(successful / finished, 6),
        "actions": actions,
        "escalations": escalations,
        "escalation_rate": round(escalations / actions, 6),
        "blocked": sum(k.blocked * n for k, n in runs),
        "tool_errors": errors,
        "tool_error_rate": round(errors / (executed + errors), 6),
        "spend": spend,
        "minutes": minutes,
        "avoided": avoided,
        "net": avoided - spend,
    }


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def _seed(gw: Gateway, clock: Clock, now: datetime) -> None:
    for tenant, age, kind, n in SEEDED:
        for i in range(n):
            clock.now = now - age
            run = gw.open_run(tenant=tenant, agent="bot", task="t", task_type="triage")
            ticket = f"{tenant}-{kind}-{i}"
            if kind == "flaky":
                await run.call("flaky", {"ticket": ticket})
            else:
                await run.call("lookup", {"ticket": ticket})
            if kind in ("good", "vip"):
                await run.call("resolve", {"ticket": "vip" if kind == "vip" else ticket})
            if kind == "escalated":
                pending = await run.call("refund", {"ticket": ticket, "amount": 500})
                assert pending.approval_id is not None
                clock.now = now - age + DECISION
                await gw.approve(
                    pending.approval_id, approver="lead-1", rationale="ok", roles=["lead"]
                )
            run.finish("completed")
    gw.flush()


@pytest.fixture
async def app(store_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    now = datetime.now(UTC)
    clock = Clock(now)
    seeder = Gateway(
        load_spec_text(SPEC, "desk.yaml"),
        [lookup, resolve, refund, flaky],
        store=store_url,
        clock=clock,
    )
    await _seed(seeder, clock, now)
    seeder.close()
    tools = tools_of(tmp_path, "test_console_dashboards", ["lookup", "resolve", "refund", "flaky"])
    async with running_app(store_url, tmp_path, SPEC, tools) as made:
        yield made


@pytest.fixture
async def browser_for(app: Any) -> AsyncIterator[Callable[..., Any]]:
    made: list[Browser] = []

    async def sign_in(role: str, tenant: str, **binding: Any) -> Browser:
        key = app.state.warden.keys.create(
            name=f"ui-{role}-{tenant}", role=role, tenant=tenant, created_by="t", **binding
        )[1]
        browser = Browser(app)
        made.append(browser)
        answer = await browser.sign_in(key)
        assert answer.status_code == 303, answer.text
        return browser

    yield sign_in
    for b in made:
        await b.http.aclose()


def _usd(text: str) -> Decimal:
    return Decimal(text)


def _figure(html: str, figure_id: str) -> str:
    found = re.search(rf'id="{figure_id}">([^<]*)<', html)
    assert found is not None, figure_id
    return found[1]


__all__ = ["fake"]  # a fixture, used by name


# -- spend per route, from the rollups ---------------------------------------------------------


async def test_spend_by_route_and_tenant_equal_the_cost_reports(
    store_url: str, fake: FakeUpstream
) -> None:
    """Model calls through the fake upstream (test_costs' scenario: two declared models,
    two tenants, runs now and 8 days ago): the rollups' spend per route and per tenant is
    the cost report's, which reads the ledger's usage events."""
    await scenario(store_url, fake)
    store = Store(store_url)
    try:
        found = dashboard(store, window="7d")
        by_route = cost_report(store, by=["route"])
        by_tenant = cost_report(store, by=["tenant"])
    finally:
        store.dispose()
    assert found.spend_by_route == {
        g.key["route"]: g.current.cost_usd for g in by_route.groups if g.current.cost_usd
    }
    assert found.spend_by_tenant == {g.key["tenant"]: g.current.cost_usd for g in by_tenant.groups}


def test_spend_the_rollups_hold_no_route_for_is_shown_as_not_attributed(store_url: str) -> None:
    store = Store(store_url)
    try:
        hour = int(datetime.now(UTC).timestamp()) // 3600 * 3600
        write_rows(store, {("desk", "acme", "", hour, "runs_started", ""): 1})
        write_rows(store, {("desk", "acme", "", hour, "spend_nusd", ""): 5_000_000})
        found = dashboard(store, window="1h")
    finally:
        store.dispose()
    assert found.spend_by_route == {"(not attributed)": Decimal("0.005")}


# -- GET /v1/dashboard ------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["1h", "7d", "30d"])
async def test_json_figures_are_what_the_seeded_runs_imply(
    app: Any, client_for: Callable[..., httpx.AsyncClient], window: str
) -> None:
    r = await client_for("auditor", "acme").get("/v1/dashboard", params={"window": window})
    assert r.status_code == 200, r.text
    body = r.json()
    want = expected(window, "acme")
    f = body["figures"]
    assert body["tenant"] == "acme"
    assert body["window"] == window
    assert f["runs_finished"] == want["finished"]
    assert f["successful"] == want["successful"]
    assert f["success_rate"] == want["success_rate"]
    assert f["actions"] == want["actions"]
    assert f["escalations"] == want["escalations"]
    assert f["escalation_rate"] == want["escalation_rate"]
    assert f["blocked_by_rule"] == ({"no_vip": want["blocked"]} if want["blocked"] else {})
    assert f["tool_error_rate"] == want["tool_error_rate"]
    assert _usd(f["cost_usd"]) == want["spend"]
    assert _usd(f["cost_per_success_usd"]) == (want["spend"] / want["successful"]).quantize(
        Decimal("0.000000001"), rounding=ROUND_HALF_EVEN
    )
    assert {k: _usd(v) for k, v in body["spend_by_tenant"].items()} == {"acme": want["spend"]}
    assert _usd(body["spend_by_route"]["(tools)"]) == want["spend"]
    series_runs = sum(p["runs_started"] for p in body["series"])
    assert series_runs == want["finished"]
    roi = body["roi_total"]
    assert roi["tasks_resolved"] == want["successful"]
    assert Decimal(roi["minutes_saved"]) == want["minutes"]
    assert _usd(roi["cost_avoided_usd"]) == want["avoided"]
    assert _usd(roi["net_value_usd"]) == want["net"]


async def test_time_to_decision_latency_and_series_steps(
    app: Any, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    auditor = client_for("auditor", "acme")
    hour = (await auditor.get("/v1/dashboard", params={"window": "1h"})).json()
    waited = round(upper_ms(bucket_of(DECISION.total_seconds() * 1000)), 3)
    assert hour["figures"]["decision_p50_ms"] == waited
    assert hour["figures"]["decision_mean_ms"] == DECISION.total_seconds() * 1000
    assert hour["figures"]["approvals_decided"] == {"approved": 1}
    assert hour["figures"]["p95_latency_ms"] is not None
    assert hour["step_s"] == 3600
    week = (await auditor.get("/v1/dashboard", params={"window": "7d"})).json()
    assert week["step_s"] == 6 * 3600
    assert 28 <= len(week["series"]) <= 30
    month = (await auditor.get("/v1/dashboard", params={"window": "30d"})).json()
    assert 30 <= len(month["series"]) <= 32


async def test_drift_and_slo_status(app: Any, client_for: Callable[..., httpx.AsyncClient]) -> None:
    body = (await client_for("auditor", "acme").get("/v1/dashboard")).json()
    week, month = expected("7d", "acme"), expected("30d", "acme")
    (success,) = [d for d in body["drift"] if d["figure"] == "success_rate"]
    assert success["value_7d"] == week["success_rate"]
    assert success["value_30d"] == month["success_rate"]
    change = (week["success_rate"] - month["success_rate"]) / month["success_rate"] * 100
    assert success["change_pct"] == pytest.approx(change, abs=0.05)
    (target,) = body["slo"]
    assert (target["target"], target["expected"]) == ("success_rate", 0.8)
    assert target["status"] == ("met" if week["success_rate"] >= 0.8 else "missed")


async def test_an_all_tenant_key_sees_every_tenant_or_the_one_it_names(
    app: Any, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    admin = client_for("admin", "*")
    everyone = (await admin.get("/v1/dashboard", params={"window": "1h"})).json()
    assert set(everyone["spend_by_tenant"]) == {"acme", "globex"}
    assert everyone["figures"]["runs_finished"] == expected("1h")["finished"]
    globex = (await admin.get("/v1/dashboard", params={"window": "1h", "tenant": "globex"})).json()
    assert globex["figures"]["runs_finished"] == expected("1h", "globex")["finished"]


async def test_a_foreign_tenant_key_sees_none_of_the_other_tenants_figures(
    app: Any, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    rival = client_for("auditor", "globex")
    mine = (await rival.get("/v1/dashboard", params={"window": "30d"})).json()
    assert set(mine["spend_by_tenant"]) == {"globex"}
    assert mine["figures"]["runs_finished"] == expected("30d", "globex")["finished"]
    other = await rival.get("/v1/dashboard", params={"tenant": "acme"})
    assert other.status_code == 403


async def test_agent_and_approver_keys_are_refused_as_by_slo(
    app: Any, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    agent = await client_for("agent", "acme", agent="bot").get("/v1/dashboard")
    assert agent.status_code == 403
    approver = await client_for("approver", "acme").get("/v1/dashboard")
    assert approver.status_code == 403


async def test_a_bad_window_is_a_422_problem(
    app: Any, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    r = await client_for("auditor", "acme").get("/v1/dashboard", params={"window": "2w"})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "1h, 7d, 30d" in r.json()["detail"]


async def test_an_empty_window_says_so(
    app: Any, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    body = (await client_for("admin", "*").get("/v1/dashboard", params={"tenant": "nobody"})).json()
    assert body["empty"] is True
    assert body["roi_total"] is None


async def test_the_route_is_in_the_openapi_schema(
    app: Any, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    schema = (await client_for("admin", "*").get("/openapi.json")).json()
    ok = schema["paths"]["/v1/dashboard"]["get"]["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/DashboardOut"}


# -- /ui/dashboards ---------------------------------------------------------------------------


async def test_the_page_shows_the_figures_charts_and_roi(
    app: Any, browser_for: Callable[..., Any]
) -> None:
    auditor = await browser_for("auditor", "acme")
    page = await auditor.get("/ui/dashboards", params={"window": "1h"})
    assert page.status_code == 200, page.text
    html = page.text
    want = expected("1h", "acme")
    assert _figure(html, "fig-success-rate") == f"{want['success_rate'] * 100:.1f}%"
    assert _figure(html, "fig-escalation-rate") == f"{want['escalation_rate'] * 100:.1f}%"
    assert _figure(html, "fig-blocks") == str(want["blocked"])
    assert _figure(html, "fig-spend") == f"${want['spend']:.2f}"
    assert _figure(html, "roi-resolved") == str(want["successful"])
    assert f">{want['minutes']} minutes<" in html
    assert _figure(html, "roi-avoided") == f"${want['avoided']:,.2f}"
    assert _figure(html, "roi-net") == f"${want['net']:,.2f}"
    svgs = re.findall(r'<svg role="img" aria-labelledby="([^"]+)"', html)
    assert len(svgs) >= 5
    assert html.count("<details>") == len(svgs)  # each chart has its table
    assert 'style="' not in html  # the CSP forbids inline style


async def test_the_page_switches_window(app: Any, browser_for: Callable[..., Any]) -> None:
    auditor = await browser_for("auditor", "acme")
    for window in ("1h", "7d", "30d"):
        html = (await auditor.get("/ui/dashboards", params={"window": window})).text
        want = expected(window, "acme")
        assert _figure(html, "roi-resolved") == str(want["successful"])


async def test_the_page_of_a_foreign_tenant_shows_none_of_acme(
    app: Any, browser_for: Callable[..., Any]
) -> None:
    rival = await browser_for("auditor", "globex")
    html = (await rival.get("/ui/dashboards", params={"window": "30d"})).text
    assert _figure(html, "roi-resolved") == str(expected("30d", "globex")["successful"])
    assert "acme" not in html
    refused = await rival.get("/ui/dashboards", params={"tenant": "acme"})
    assert refused.status_code == 403


async def test_the_page_needs_a_session(app: Any) -> None:
    anonymous = Browser(app)
    try:
        r = await anonymous.get("/ui/dashboards?window=30d")
    finally:
        await anonymous.http.aclose()
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/signin?next=%2Fui%2Fdashboards%3Fwindow%3D30d"


async def test_an_agent_key_gets_the_apis_refusal(
    app: Any, browser_for: Callable[..., Any]
) -> None:
    bot = await browser_for("agent", "acme", agent="bot")
    assert (await bot.get("/ui/dashboards")).status_code == 403


async def test_a_bad_window_on_the_page_is_an_error_at_the_field(
    app: Any, browser_for: Callable[..., Any]
) -> None:
    auditor = await browser_for("auditor", "acme")
    page = await auditor.get("/ui/dashboards", params={"window": "2w"})
    assert page.status_code == 422
    assert 'id="f-window-error"' in page.text
    assert 'aria-describedby="f-window-error"' in page.text


async def test_an_empty_window_on_the_page_says_no_runs(
    app: Any, browser_for: Callable[..., Any]
) -> None:
    admin = await browser_for("admin", "*")
    page = await admin.get("/ui/dashboards", params={"tenant": "nobody"})
    assert "No runs in this window." in page.text
    assert 'id="fig-success-rate"' not in page.text


async def test_without_roi_the_panel_says_how_to_add_it(
    app: Any, store_url: str, tmp_path: Path
) -> None:
    spec = tmp_path / "bare" / "desk.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC.split("roi:")[0])
    bare = create_app(
        ServerSettings(
            store=store_url,
            specs=[str(spec)],
            tools=[f"{tmp_path / 'desk_tools.py'}:tools"],
            key_cache_s=0.0,
        )
    )
    key = bare.state.warden.keys.create(name="bare", role="auditor", tenant="acme", created_by="t")[
        1
    ]
    auditor = Browser(bare)
    try:
        assert (await auditor.sign_in(key)).status_code == 303
        html = (await auditor.get("/ui/dashboards")).text
    finally:
        await auditor.http.aclose()
        bare.state.warden.close()
    assert 'id="roi-howto"' in html
    assert 'id="roi-net"' not in html


# -- the spec's roi: block ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "block",
    [
        "roi: {human_minutes_per_task: 0, human_cost_per_hour_usd: 42}",
        "roi: {human_minutes_per_task: 9, human_cost_per_hour_usd: -1}",
        "roi: {human_minutes_per_task: 9}",
        "roi: {human_minutes_per_task: 9, human_cost_per_hour_usd: 42, escalation_mins: 4}",
    ],
)
def test_a_bad_roi_block_is_a_spec_error(block: str) -> None:
    text = SPEC.split("roi:")[0] + block + "\n"
    with pytest.raises(SpecError, match="roi"):
        load_spec_text(text, "desk.yaml")


def test_the_demo_spec_declares_an_roi_baseline() -> None:
    demo = load_spec(Path(__file__).parents[1] / "examples" / "refund_triage" / "workflow.yaml")
    assert demo.spec.roi is not None
    assert demo.spec.roi.human_cost_per_hour_usd == Decimal(42)
