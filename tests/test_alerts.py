"""Alerts (issue 10 §4) and the webhook kinds they brought, on SQLite and PostgreSQL.

Each alert kind fires once (also with two gateways on one store, each evaluating), and
resolves; the notifications are in the outbox, and a real delivery is signed and passes
the example receiver of docs/webhooks.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _inproc import running_app, tools_of
from sqlalchemy import select
from test_notify import SECRET, Receiver, resolver, target
from test_slo import SPEC, Clock, desk, triage

from warden import Gateway, SpecError
from warden.notify import Dispatcher
from warden.results import Allowed, Denied, Pending
from warden.spec import load_spec_text
from warden.store._tables import alert_state, outbox
from warden.telemetry import list_alerts

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
DOCS = Path(__file__).parent.parent / "docs"

ALERTS = """
alerts:
  - kind: unauthorized_attempt
    count: 2
    within: 10m
  - kind: tool_failures
    count: 2
    within: 10m
  - kind: runaway_run
    max_steps: 3
  - kind: approval_queue
    max_depth: 0
  - kind: slo_breach
    window: 1h
  - kind: cost_growth
    max_increase_pct: 20
"""
APPROVAL_RULE = """policies:
  - name: big_needs_a_lead
    when: tool.name == "resolve" && args.ticket == "big"
    effect: require_approval
    reason: big tickets need a lead
    approvers: lead
"""
ALERT_SPEC = (
    SPEC.replace("policies:\n", APPROVAL_RULE, 1)
    + ALERTS
    + ("escalation:\n  approver_roles: [lead]\n  sla: 1h\n")
)


def notifications(gw: Gateway, kind: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    query = select(outbox.c.kind, outbox.c.payload).order_by(outbox.c.id)
    with gw.store.read() as conn:
        found = [(k, json.loads(p)) for k, p in conn.execute(query)]
    return [(k, p) for k, p in found if kind is None or k == kind]


def alert_changes(gw: Gateway, alert: str) -> list[str]:
    """``fired``/``resolved`` per notification of ``alert``, in order."""
    return [
        k.removeprefix("alert_")
        for k, p in notifications(gw)
        if k in ("alert_fired", "alert_resolved") and p["alert"] == alert
    ]


@pytest.fixture
def pair(store_url: str) -> Iterator[tuple[Gateway, Gateway, Clock]]:
    """Two gateways (as two replicas) on one store, one clock."""
    clock = Clock(NOW)
    one, two = desk(store_url, clock, ALERT_SPEC), desk(store_url, clock, ALERT_SPEC)
    yield one, two, clock
    one.close()
    two.close()


def flush_and_evaluate(*gateways: Gateway) -> None:
    for gw in gateways:
        gw.flush()
    for gw in gateways:
        assert gw.rollups.alerts is not None
        gw.rollups.alerts.evaluate()


async def test_unauthorized_attempts_fire_once_across_gateways_and_resolve(
    pair: tuple[Gateway, Gateway, Clock],
) -> None:
    one, two, clock = pair
    for gw in (one, two):  # one refusal each: two in 10 minutes between them
        run = gw.open_run(tenant="acme", agent="weak", task="t", task_type="chat")
        await run.call("resolve", {"ticket": "x"})
        gw.flush()
    flush_and_evaluate(one, two)
    assert alert_changes(one, "unauthorized_attempt") == ["fired"]
    (fired,) = notifications(one, "alert_fired")
    assert fired[1]["subject"] == "acme" and fired[1]["detail"]["count"] == 2
    clock.now += timedelta(minutes=11)
    flush_and_evaluate(one, two)
    assert alert_changes(one, "unauthorized_attempt") == ["fired", "resolved"]
    # it fires again, once, when it holds again
    clock.now += timedelta(minutes=1)
    for gw in (one, two):
        run = gw.open_run(tenant="acme", agent="weak", task="t", task_type="chat")
        await run.call("resolve", {"ticket": "x"})
    flush_and_evaluate(one, two)
    assert alert_changes(one, "unauthorized_attempt") == ["fired", "resolved", "fired"]
    (row,) = list_alerts(one.store, state="firing")
    assert row["times_fired"] == 2 and row["tenant"] == "acme"


async def test_repeated_tool_failures_fire_once_and_resolve(
    pair: tuple[Gateway, Gateway, Clock],
) -> None:
    one, two, clock = pair
    run = one.open_run(tenant="acme", agent="bot", task="t", task_type="chat")
    await run.call("flaky", {"ticket": "x"})
    flush_and_evaluate(one, two)
    assert alert_changes(one, "tool_failures") == []  # one failure: under the count
    other = two.open_run(tenant="globex", agent="bot", task="t", task_type="chat")
    await other.call("flaky", {"ticket": "y"})
    flush_and_evaluate(one, two)
    flush_and_evaluate(two, one)
    assert alert_changes(one, "tool_failures") == ["fired"]
    (fired,) = [p for k, p in notifications(one, "alert_fired") if p["alert"] == "tool_failures"]
    assert (fired["tenant"], fired["subject"]) == ("*", "flaky")
    clock.now += timedelta(minutes=10, seconds=1)
    flush_and_evaluate(one, two)
    assert alert_changes(one, "tool_failures") == ["fired", "resolved"]


async def test_runaway_run_fires_once_and_resolves_when_the_run_ends(
    pair: tuple[Gateway, Gateway, Clock],
) -> None:
    one, two, _ = pair
    run = one.open_run(tenant="acme", agent="bot", task="t", task_type="chat")
    for i in range(5):
        await run.call("lookup", {"ticket": str(i)})
        flush_and_evaluate(one, two)
    assert alert_changes(one, "runaway_run") == ["fired"]
    (row,) = [a for a in list_alerts(one.store) if a["alert"] == "runaway_run"]
    assert row["subject"] == f"acme/{run.run_id}" and row["state"] == "firing"
    run.finish("completed")
    flush_and_evaluate(one, two)
    assert alert_changes(one, "runaway_run") == ["fired", "resolved"]


async def test_approval_queue_and_the_approval_webhooks(
    pair: tuple[Gateway, Gateway, Clock],
) -> None:
    one, two, clock = pair
    run = one.open_run(tenant="acme", agent="bot", task="t", task_type="triage")
    pending = await run.call("resolve", {"ticket": "big"})
    assert isinstance(pending, Pending)
    approval_id = pending.approval_id
    flush_and_evaluate(one, two)
    assert alert_changes(one, "approval_queue") == ["fired"]
    (fired,) = [p for k, p in notifications(one, "alert_fired") if p["alert"] == "approval_queue"]
    assert fired["detail"]["depth"] == 1 and fired["tenant"] == "*"
    clock.now += timedelta(minutes=3)
    await two.approve(approval_id, approver="dana", rationale="fine", roles=["lead"])
    result = await two.execute_approved(approval_id)
    assert isinstance(result, Allowed)
    flush_and_evaluate(one, two)
    assert alert_changes(one, "approval_queue") == ["fired", "resolved"]
    (decided,) = notifications(one, "approval_decided")
    assert decided[1] == {
        "approval_id": approval_id,
        "workflow": "desk",
        "run_id": run.run_id,
        "action_id": pending.action_id,
        "decision": "approved",
        "approver": "dana",
        "on_behalf_of": None,
        "role": "lead",
        "rationale": "fine",
    }
    (executed,) = notifications(one, "approval_executed")
    assert executed[1]["outcome"] == "executed" and executed[1]["approval_id"] == approval_id
    # the time to decision is in the rollups: 3 minutes
    from warden.telemetry import slo_report

    (group,) = slo_report(one.store, now=clock.now).groups
    hour = group.windows["1h"]
    assert hour.approvals_decided == {"approved": 1}
    assert hour.decision_p95_ms is not None and 180_000 <= hour.decision_p95_ms < 180_000 * 1.2


async def test_slo_breach_fires_per_target_and_resolves(
    pair: tuple[Gateway, Gateway, Clock],
) -> None:
    one, two, clock = pair
    clock.now = NOW - timedelta(minutes=10)
    await triage(one, "acme", "vip")  # denied by no_vip: success 0, violations 1 of 2
    clock.now = NOW
    flush_and_evaluate(one, two)
    subjects = {
        p["subject"] for k, p in notifications(one, "alert_fired") if p["alert"] == "slo_breach"
    }
    # no run succeeded: there is no cost per successful task to miss
    assert subjects == {"acme/triage/success_rate", "acme/triage/policy_violation_rate_max"}
    clock.now = NOW + timedelta(hours=2)  # the run is out of the 1 h window
    flush_and_evaluate(one, two)
    resolved = [p for k, p in notifications(one, "alert_resolved") if p["alert"] == "slo_breach"]
    assert {p["subject"] for p in resolved} == subjects and len(resolved) == 2


async def test_cost_per_task_up_week_over_week(pair: tuple[Gateway, Gateway, Clock]) -> None:
    one, two, clock = pair
    clock.now = NOW - timedelta(days=10)
    await triage(one, "acme", "a")  # $0.03 per success
    clock.now = NOW - timedelta(days=1)
    run = one.open_run(tenant="acme", agent="bot", task="t", task_type="triage")
    for ticket in ("b", "b2", "b3"):
        await run.call("lookup", {"ticket": ticket})
    await run.call("resolve", {"ticket": "b"})
    run.finish("completed")  # $0.05 per success: +66.7 %
    clock.now = NOW
    flush_and_evaluate(one, two)
    (fired,) = [p for k, p in notifications(one, "alert_fired") if p["alert"] == "cost_growth"]
    assert fired["detail"] == {
        "cost_per_task_usd": "0.05",
        "previous_cost_per_task_usd": "0.03",
        "increase_pct": 66.7,
    }
    clock.now = NOW + timedelta(days=14)
    flush_and_evaluate(one, two)
    assert alert_changes(one, "cost_growth") == ["fired", "resolved"]


async def test_switch_changed_webhook(pair: tuple[Gateway, Gateway, Clock]) -> None:
    one, _, _ = pair
    one.switches.set("tool", "resolve", active=True, by="dana", reason="double charges")
    (changed,) = notifications(one, "switch_changed")
    assert {k: v for k, v in changed[1].items() if k != "set_at"} == {
        "scope": "tool",
        "target": "resolve",
        "active": True,
        "by": "dana",
        "reason": "double charges",
    }


def test_alert_specs_are_checked() -> None:
    with pytest.raises(SpecError, match="max_steps, max_cost_usd or both"):
        load_spec_text(SPEC + "alerts:\n  - kind: runaway_run\n", "x.yaml")
    with pytest.raises(SpecError, match="named twice"):
        load_spec_text(SPEC + "alerts:\n  - kind: slo_breach\n  - kind: slo_breach\n", "x.yaml")
    with pytest.raises(SpecError, match="kind"):
        load_spec_text(SPEC + "alerts:\n  - kind: moon_phase\n", "x.yaml")


def _example_receiver() -> Any:
    text = (DOCS / "webhooks.md").read_text()
    (code,) = [
        block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "def handle" in block
    ]
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), scope)
    return scope["handle"]


async def test_alert_delivery_is_signed_and_the_documented_receiver_verifies_it(
    pair: tuple[Gateway, Gateway, Clock], capsys: pytest.CaptureFixture[str]
) -> None:
    one, _, _ = pair
    run = one.open_run(tenant="acme", agent="bot", task="t", task_type="chat")
    for i in range(4):
        await run.call("lookup", {"ticket": str(i)})
    one.flush()  # runaway_run fires
    receiver = Receiver()
    receiver.start()
    try:
        hook = target(receiver.url + "/hook", events=["alert_fired"])
        async with Dispatcher(one.store, [hook], resolver()) as dispatcher:
            assert await dispatcher.run_once() == 1
    finally:
        receiver.stop()
    (delivery,) = receiver.requests
    handle = _example_receiver()
    status, notification = handle(SECRET, delivery.headers, delivery.body)
    assert status == 200 and notification["kind"] == "alert_fired"
    assert notification["payload"]["alert"] == "runaway_run"
    assert "ALERT runaway_run acme/" in capsys.readouterr().out
    # altered, or signed with another secret: refused
    assert handle(SECRET, delivery.headers, delivery.body.replace(b"acme", b"acmf"))[0] == 401
    assert handle("another-secret", delivery.headers, delivery.body)[0] == 401
    with one.store.read() as conn:
        assert conn.execute(select(alert_state.c.state)).scalars().all() == ["firing"]


async def test_budget_threshold_alert_fires_once_and_resolves_with_its_period(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_model_calls import SPEC as MODEL_SPEC
    from test_model_calls import lookup

    from warden.pipeline._models import ChatResult
    from warden.testing import FakeReply, FakeUpstream
    from warden.upstream import Usage

    monkeypatch.setenv("WARDEN_TEST_LLM_KEY", "sk-upstream")
    budgets = "  - {name: daily, scope: tenant, period: calendar_day, usd: 0.01, alert_at: [0.5]}"
    clock = Clock(NOW)
    with FakeUpstream(api_key="sk-upstream") as fake:
        text = MODEL_SPEC.format(
            openai=fake.openai_url, anthropic=fake.anthropic_url, budgets=budgets
        )
        spec = load_spec_text(text + "alerts:\n  - kind: budget_threshold\n", "assist.yaml")
        gws = [Gateway(spec, [lookup], store=store_url, clock=clock) for _ in range(2)]
        try:
            fake.push(*(FakeReply("x", usage=Usage(1000, 1000)) for _ in range(3)))
            for i in range(3):  # $0.003 each: the second crosses 50 % of $0.01
                gw = gws[i % 2]
                run = gw.open_run(tenant="acme", agent="bot", task="t")
                asked = [{"role": "user", "content": f"question {i}"}]
                assert isinstance(await run.chat("small", asked, max_tokens=1000), ChatResult)
                run.finish("completed")
                flush_and_evaluate(*gws)
            assert alert_changes(gws[0], "budget_threshold") == ["fired"]
            (fired,) = [
                p
                for k, p in notifications(gws[0], "alert_fired")
                if p["alert"] == "budget_threshold"
            ]
            assert fired["subject"] == "acme/daily/usd/0.5" and fired["tenant"] == "acme"
            (crossing,) = notifications(gws[0], "budget_threshold")
            assert set(crossing[1]) == documented_keys("budget_threshold")
            clock.now = NOW + timedelta(hours=6)  # the same UTC day: still firing
            flush_and_evaluate(*gws)
            assert alert_changes(gws[0], "budget_threshold") == ["fired"]
            clock.now = datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC)  # the next day
            flush_and_evaluate(*gws)
            assert alert_changes(gws[0], "budget_threshold") == ["fired", "resolved"]
        finally:
            for gw in gws:
                await gw.aclose()


async def test_alerts_are_listed_by_the_cli_and_the_api(store_url: str, tmp_path: Path) -> None:
    import httpx
    from test_slo import warden

    from warden.auth import KeyStore

    tools = tools_of(tmp_path, "test_slo", ["lookup", "resolve", "flaky"])
    async with running_app(store_url, tmp_path, ALERT_SPEC, tools) as app:
        state = app.state.warden
        gw = state.gateway("desk")
        runs = {}
        for tenant in ("acme", "acme", "globex"):
            run = gw.open_run(tenant=tenant, agent="weak", task="t", task_type="chat")
            await run.call("resolve", {"ticket": "x"})  # scope_denied
            runs[tenant] = run.run_id
        gw.flush()  # acme: 2 in 10 minutes, fired; globex: 1, not
        keys = KeyStore(state.store, cache_s=0.0)

        def client(role: str, tenant: str, **binding: Any) -> httpx.AsyncClient:
            name = f"{role}-{tenant}"
            secret = keys.create(name=name, role=role, tenant=tenant, created_by="t", **binding)
            return httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://warden.test",
                headers={"Authorization": f"Bearer {secret[1]}"},
            )

        async with client("auditor", "acme") as auditor:
            r = await auditor.get("/v1/alerts", params={"state": "firing"})
            assert r.status_code == 200, r.text
            (alert,) = r.json()["alerts"]
            assert (alert["alert"], alert["tenant"], alert["state"]) == (
                "unauthorized_attempt",
                "acme",
                "firing",
            )
            bad = await auditor.get("/v1/alerts", params={"state": "burning"})
            assert bad.status_code == 422
        # a globex key reaching for acme's run is an unauthorized attempt of globex: its
        # second in 10 minutes (the governed call goes through the fast path)
        async with client("agent", "globex", agent="weak") as intruder:
            r = await intruder.post(
                f"/v1/runs/{runs['acme']}/actions",
                json={"tool": "lookup", "args": {"ticket": "x"}},
            )
            assert r.status_code == 404
        state.rollups.flush()
        firing = {a["tenant"] for a in list_alerts(state.store, state="firing")}
        assert firing == {"acme", "globex"}
        # and so is asking for another tenant's figures (403, through the route)
        async with client("auditor", "initech") as other:
            assert (await other.get("/v1/slo", params={"tenant": "acme"})).status_code == 403
            assert (await other.get("/v1/alerts", params={"tenant": "acme"})).status_code == 403
        state.rollups.flush()
        firing = {a["tenant"] for a in list_alerts(state.store, state="firing")}
        assert firing == {"acme", "globex", "initech"}
    listed = warden("alerts", "--store", store_url, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert {a["subject"] for a in json.loads(listed.stdout)["alerts"]} == {
        "acme",
        "globex",
        "initech",
    }
    table = warden("alerts", "--store", store_url, "--state", "firing", cwd=tmp_path)
    assert table.returncode == 0 and "unauthorized_attempt" in table.stdout
    refused = warden("alerts", "--store", store_url, "--state", "burning", cwd=tmp_path)
    assert refused.returncode != 0


async def test_the_server_loop_evaluates_time_based_alerts(store_url: str, tmp_path: Path) -> None:
    import asyncio


    tools = tools_of(tmp_path, "test_slo", ["lookup", "resolve", "flaky"])
    # key_cache_s as the server's default: this test reads no keys
    async with running_app(
        store_url, tmp_path, ALERT_SPEC, tools, alert_interval_s=0.05, key_cache_s=2.0
    ) as app:
        gw = app.state.warden.gateway("desk")
        run = gw.open_run(tenant="acme", agent="bot", task="t", task_type="triage")
        assert isinstance(await run.call("resolve", {"ticket": "big"}), Pending)
        for _ in range(200):  # no one calls evaluate: the server's loop does
            found = [a for a in list_alerts(gw.store) if a["alert"] == "approval_queue"]
            if found:
                break
            await asyncio.sleep(0.05)
        assert [(a["state"], a["detail"]["depth"]) for a in found] == [("firing", 1)]


async def test_an_approved_action_stopped_by_a_switch_is_announced_as_denied(
    pair: tuple[Gateway, Gateway, Clock],
) -> None:
    one, _, _ = pair
    run = one.open_run(tenant="acme", agent="bot", task="t", task_type="triage")
    pending = await run.call("resolve", {"ticket": "big"})
    assert isinstance(pending, Pending)
    await one.approve(pending.approval_id, approver="dana", rationale="ok", roles=["lead"])
    one.switches.set("tool", "resolve", active=True, by="dana", reason="incident")
    result = await one.execute_approved(pending.approval_id)
    assert isinstance(result, Denied)
    one.flush()
    (executed,) = notifications(one, "approval_executed")
    assert (executed[1]["outcome"], executed[1]["kind"]) == ("denied", "killed")
    # in the order it happened (the approval queue alert is time-based: not evaluated here)
    assert [k for k, _ in notifications(one)] == [
        "approval_requested",
        "approval_decided",
        "switch_changed",
        "approval_executed",
    ]


def documented_keys(kind: str) -> set[str]:
    """The keys of the example payload docs/webhooks.md gives for ``kind``."""
    text = (DOCS / "webhooks.md").read_text()
    section = text.split(f"### `{kind}`", 1)[1].split("\n### ", 1)[0]
    example = re.findall(r"```json\n(.*?)```", section, re.S)[0]
    return set(json.loads(example))


async def test_every_webhook_payload_is_the_documented_one(
    pair: tuple[Gateway, Gateway, Clock],
) -> None:
    one, two, clock = pair
    run = one.open_run(tenant="acme", agent="bot", task="t", task_type="triage")
    approved = await run.call("resolve", {"ticket": "big"})
    other = one.open_run(tenant="acme", agent="bot", task="t", task_type="triage")
    expiring = await other.call("resolve", {"ticket": "big"})
    assert isinstance(approved, Pending) and isinstance(expiring, Pending)
    await one.approve(approved.approval_id, approver="dana", rationale="ok", roles=["lead"])
    assert isinstance(await one.execute_approved(approved.approval_id), Allowed)
    one.switches.set("tool", "lookup", active=True, by="dana", reason="incident")
    flush_and_evaluate(one, two)  # the approval queue alert fires (one still pending)
    clock.now += timedelta(hours=2)
    one.expire_overdue()  # past its 1 h SLA, no one to escalate to: expired (sla_breach)
    flush_and_evaluate(one, two)  # the queue is empty: resolved
    seen: dict[str, set[str]] = {}
    for kind, payload in notifications(one):
        seen.setdefault(kind, set()).update(payload)
    assert set(seen) == {
        "approval_requested",
        "approval_decided",
        "approval_executed",
        "switch_changed",
        "sla_breach",
        "alert_fired",
        "alert_resolved",
    }
    for kind, keys in seen.items():
        assert keys == documented_keys(kind), kind
