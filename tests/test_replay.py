"""Replay on SQLite and PostgreSQL: recorded calls re-decided under a candidate spec with
the facts as recorded and windows rebuilt from history, executing and writing nothing;
``warden diff`` of two specs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _stack import Stack
from sqlalchemy import func, select
from typer.testing import CliRunner

from warden import Gateway, Pending, tool
from warden import events as ev
from warden.cli._app import app
from warden.errors import InvalidInputError
from warden.evals._diff import diff_specs
from warden.evals._replay import ReplayReport, replay
from warden.ledger import iter_events
from warden.spec import LoadedSpec, load_spec_text
from warden.store import Store
from warden.store._tables import ledger_events, runs, window_entries

SPEC = """
name: shop
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  bot: {scopes: []}
tools:
  get_order: {effect: read}
  refund: {effect: money}
facts:
  order:
    tool: get_order
    args: {order_id: args.order_id}
windows:
  per_customer: {tool: refund, group_by: facts.order.customer_id, period: 24h}
policies:
  - name: small_refunds
    when: tool.name == "refund" && args.amount <= 100.0
    effect: allow
    reason: small refunds run alone
  - name: big_refunds_need_approval
    when: tool.name == "refund" && args.amount > 100.0
    effect: require_approval
    reason: big refunds need a lead
    approvers: lead
escalation: {approver_roles: [lead], max_requests_per_run: 50}
"""

# (order, amount): orders o1-o3 belong to c1, o4 to bob.
CALLS = [("o1", 20.0), ("o2", 70.0), ("o3", 90.0), ("o4", 60.0), ("o1", 150.0)]


class Orders:
    """The fact tool's data, and how often it was called."""

    def __init__(self) -> None:
        self.owner = {"o1": "c1", "o2": "c1", "o3": "c1", "o4": "bob"}
        self.lookups = 0

    def tools(self) -> list[Any]:
        @tool
        def get_order(order_id: str) -> dict[str, Any]:
            self.lookups += 1
            return {"id": order_id, "customer_id": self.owner[order_id]}

        @tool(effect="money")
        def refund(order_id: str, amount: float) -> dict[str, Any]:
            return {"ok": True}

        return [get_order, refund]


@pytest.fixture
def orders() -> Orders:
    return Orders()


@pytest.fixture
def recorded(store_url: str, orders: Orders) -> Iterator[tuple[Store, str]]:
    """The five calls recorded in one run; yields the store and the run id."""
    gw = Gateway(load_spec_text(SPEC, "shop.yaml"), orders.tools(), store=store_url)

    async def go() -> str:
        async with gw.run(tenant="t", agent="bot", task="refunds") as run:
            for order_id, amount in CALLS:
                await run.call("refund", {"order_id": order_id, "amount": amount})
            return run.run_id

    run_id = asyncio.run(go())
    gw.close()
    store = Store(store_url)
    yield store, run_id
    store.dispose()


def candidate(old: str, new: str) -> LoadedSpec:
    assert old in SPEC
    return load_spec_text(SPEC.replace(old, new), "candidate.yaml")


def with_rule(name: str, when: str, effect: str) -> str:
    """A rule added before the spec's ``escalation:``."""
    return f'  - {{name: {name}, when: "{when}", effect: {effect}, reason: {name}}}\nescalation:'


def by_status(report: ReplayReport, status: str) -> list[tuple[str, float]]:
    return [(c.args["order_id"], c.args["amount"]) for c in report.of(status)]  # type: ignore[arg-type]


def counts(store: Store) -> tuple[int, int]:
    with store.read() as conn:
        return (
            conn.execute(select(func.count()).select_from(ledger_events)).scalar_one(),
            conn.execute(select(func.count()).select_from(window_entries)).scalar_one(),
        )


def test_the_same_spec_changes_nothing(recorded: tuple[Store, str]) -> None:
    store, run_id = recorded
    report = replay(store, load_spec_text(SPEC, "shop.yaml"), run_id=run_id)
    assert report.counts == {"same": 5, "changed": 0, "not_replayable": 0, "not_decided": 0}


def test_a_changed_threshold_flips_exactly_the_calls_between_the_old_and_new(
    recorded: tuple[Store, str], orders: Orders
) -> None:
    store, run_id = recorded
    before = counts(store), orders.lookups
    spec = load_spec_text(
        SPEC.replace("args.amount <= 100.0", "args.amount <= 50.0").replace(
            "args.amount > 100.0", "args.amount > 50.0"
        ),
        "candidate.yaml",
    )
    report = replay(store, spec, run_id=run_id)
    assert by_status(report, "changed") == [("o2", 70.0), ("o3", 90.0), ("o4", 60.0)]
    (first, *_) = report.of("changed")
    assert (first.old_effect, first.old_rules) == ("allow", ("small_refunds",))
    assert (first.new_effect, first.new_rules) == (
        "require_approval",
        ("big_refunds_need_approval",),
    )
    assert first.why == ("big refunds need a lead",)
    assert by_status(report, "same") == [("o1", 20.0), ("o1", 150.0)]
    # Nothing was executed or looked up, and nothing was written.
    assert (counts(store), orders.lookups) == before


def test_a_window_rule_is_decided_with_the_window_rebuilt_from_history(
    recorded: tuple[Store, str],
) -> None:
    """At most 2 refunds per customer a day: c1's third refund (o3) is denied (two executed
    before it), bob's first is not; the approval-pending o1 refund sees c1's three executed
    refunds (history as recorded: o3 executed even though the candidate denies it)."""
    store, run_id = recorded
    spec = candidate(
        "escalation:",
        "  - name: two_per_customer\n"
        "    when: window.per_customer >= 2\n"
        "    effect: deny\n"
        "    reason: at most two refunds per customer a day\n"
        "escalation:",
    )
    report = replay(store, spec, run_id=run_id)
    changed = report.of("changed")
    assert [(c.args["order_id"], c.window) for c in changed] == [
        ("o3", {"per_customer": 2}),
        ("o1", {"per_customer": 3}),
    ]
    assert {c.new_effect for c in changed} == {"deny"}
    assert changed[1].old_effect == "require_approval"
    same = {c.args["order_id"]: c.window for c in report.of("same")}
    assert same == {"o1": {"per_customer": 0}, "o2": {"per_customer": 1}, "o4": {"per_customer": 0}}


def test_facts_are_the_recorded_ones_and_the_fact_tool_is_not_called(
    recorded: tuple[Store, str], orders: Orders
) -> None:
    """The orders now all belong to bob; a rule on the order's customer still sees c1."""
    store, run_id = recorded
    orders.owner = dict.fromkeys(orders.owner, "bob")
    lookups = orders.lookups
    spec = candidate(
        "escalation:",
        "  - name: no_refunds_for_c1\n"
        "    when: facts.order.customer_id == \"c1\"\n"
        "    effect: deny\n"
        "    reason: c1 is frozen\n"
        "escalation:",
    )
    report = replay(store, spec, run_id=run_id)
    assert by_status(report, "changed") == [("o1", 20.0), ("o2", 70.0), ("o3", 90.0), ("o1", 150.0)]
    assert orders.lookups == lookups


def test_a_fact_that_was_not_looked_up_makes_the_call_not_replayable(
    recorded: tuple[Store, str],
) -> None:
    store, run_id = recorded
    spec = load_spec_text(
        SPEC.replace(
            "windows:", "  again:\n    tool: get_order\n    args: {order_id: args.order_id}\nwindows:"
        ).replace("escalation:", with_rule("uses_again", 'facts.again.id == \\"x\\"', "deny")),
        "candidate.yaml",
    )
    report = replay(store, spec, run_id=run_id)
    assert report.counts["not_replayable"] == 5
    assert report.of("not_replayable")[0].why == (
        "fact 'again' was not looked up when the call was recorded",
    )


def test_a_tool_the_candidate_drops_is_a_changed_decision(recorded: tuple[Store, str]) -> None:
    store, run_id = recorded
    spec = load_spec_text(
        SPEC.replace("  refund: {effect: money}\n", "")
        .replace("{tool: refund, group_by: facts.order.customer_id,", "{tool: get_order,")
        .replace('tool.name == "refund" && ', ""),
        "candidate.yaml",
    )
    report = replay(store, spec, run_id=run_id)
    assert report.counts["changed"] == 5
    assert {c.new_rules for c in report.of("changed")} == {("unknown_tool",)}


def test_since_selects_by_time_and_an_unknown_run_is_an_error(
    recorded: tuple[Store, str],
) -> None:
    from datetime import UTC, datetime, timedelta

    from warden.errors import WardenError

    store, _ = recorded
    spec = load_spec_text(SPEC, "shop.yaml")
    assert len(replay(store, spec, since=datetime.now(UTC) - timedelta(hours=1)).calls) == 5
    assert replay(store, spec, since=datetime.now(UTC) + timedelta(hours=1)).calls == ()
    with pytest.raises(WardenError, match="no run"):
        replay(store, spec, run_id="nope")


def test_cli_replay_lists_changed_decisions_and_fails_on_change(
    recorded: tuple[Store, str], store_url: str, tmp_path: Path
) -> None:
    _, run_id = recorded
    path = tmp_path / "candidate.yaml"
    path.write_text(SPEC.replace("args.amount <= 100.0", "args.amount <= 10.0"))
    runner = CliRunner()
    result = runner.invoke(
        app, ["replay", "--spec", str(path), "--run", run_id, "--store", store_url, "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["counts"]["changed"] == 4  # allowed before; no rule allows them now
    assert body["changed"][0]["old"] == {"effect": "allow", "rules": ["small_refunds"]}
    result = runner.invoke(
        app,
        ["replay", "--spec", str(path), "--run", run_id, "--store", store_url, "--fail-on-change"],
    )
    assert result.exit_code == 1
    assert "4 changed" in result.output
    result = runner.invoke(app, ["replay", "--spec", str(path), "--store", store_url])
    assert result.exit_code == 2
    assert "exactly one of --run" in result.output
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    result = runner.invoke(app, ["replay", "--spec", str(path), "--run", run_id, "--store", missing])
    assert result.exit_code == 2 and "no store at" in result.output
    assert not (tmp_path / "none.db").exists()  # nothing created


def test_diff_shows_tools_and_rules_added_removed_and_changed(tmp_path: Path) -> None:
    new_text = (
        SPEC.replace("refund: {effect: money}", "refund: {effect: write}\n  note: {effect: write}")
        .replace("args.amount <= 100.0", "args.amount <= 50.0")
        .replace("reason: big refunds need a lead", "reason: big refunds need a manager")
        .replace("escalation:", with_rule("notes_ok", 'tool.name == \\"note\\"', "allow"))
    )
    old = load_spec_text(SPEC, "old.yaml")
    new = load_spec_text(new_text, "new.yaml")
    d = diff_specs(old, new)
    assert d.tools.added == ["note"]
    assert d.tools.changed == {"refund": {"effect": {"old": "money", "new": "write"}}}
    assert d.policies.added == ["notes_ok"]
    assert d.policies.changed == {
        "small_refunds": {
            "when": {"old": 'tool.name == "refund" && args.amount <= 100.0',
                     "new": 'tool.name == "refund" && args.amount <= 50.0'}
        },
        "big_refunds_need_approval": {
            "reason": {"old": "big refunds need a lead", "new": "big refunds need a manager"}
        },
    }
    assert d.old_policy_fingerprint != d.new_policy_fingerprint
    assert diff_specs(old, old).empty
    (tmp_path / "old.yaml").write_text(SPEC)
    (tmp_path / "new.yaml").write_text(new_text)
    runner = CliRunner()
    result = runner.invoke(app, ["diff", str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["policies"]["removed"] == []
    text = runner.invoke(app, ["diff", str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml")])
    assert "+ tool note" in text.output and "~ rule small_refunds" in text.output


DEMO = Path(__file__).parent.parent / "examples" / "refund_triage"


@pytest.fixture
def demo_runs(store_url: str, tmp_path: Path) -> tuple[str, Path]:
    """The demo suite's cases recorded on ``store_url``; the store and a weakened spec
    (without ``refund_only_to_original_method``)."""
    from warden.evals import evaluate

    report = evaluate(DEMO / "evals" / "suite.yaml", store_url=store_url)
    assert report.passed
    text = (DEMO / "workflow.yaml").read_text()
    start = text.index("  - name: refund_only_to_original_method")
    end = text.index("  - name: refund_only_for_own_order")
    weak = tmp_path / "weak.yaml"
    weak.write_text(text[:start] + text[end:])
    return store_url, weak


def test_the_demo_traffic_replays_unchanged_and_the_weakened_spec_flips_the_injection(
    demo_runs: tuple[str, Path],
) -> None:
    from datetime import UTC, datetime, timedelta

    from warden.spec import load_spec

    url, weak = demo_runs
    store = Store(url, create=False)
    try:
        since = datetime.now(UTC) - timedelta(hours=1)
        same = replay(store, load_spec(DEMO / "workflow.yaml"), since=since)
        assert same.counts["changed"] == same.counts["not_replayable"] == 0
        assert same.counts["same"] > 40
        changed = replay(store, load_spec(weak), since=since).of("changed")
    finally:
        store.dispose()
    assert [(c.tool, c.args["payment_method_id"], c.old_rules, c.new_effect) for c in changed] == [
        ("issue_refund", "pm_9999", ("refund_only_to_original_method",), "allow")
    ]


def test_sandbox_rerun_reproduces_the_run_and_shows_where_a_weaker_spec_differs(
    demo_runs: tuple[str, Path],
) -> None:
    from warden.evals._sandbox import sandbox_replay
    from warden.spec import load_spec

    url, weak = demo_runs
    store = Store(url, create=False)
    try:
        with store.read() as conn:
            run_id = conn.execute(
                select(runs.c.run_id).where(runs.c.task == "injection-refund-to-other-method")
            ).scalar_one()
        suite = DEMO / "evals" / "suite.yaml"
        same = sandbox_replay(store, run_id, suite)
        assert same.case == "injection-refund-to-other-method"
        assert [s.now for s in same.steps] == [s.recorded for s in same.steps]
        assert same.steps[-1].recorded == "denied deny policy_block"
        assert same.diff == {}
        weaker = sandbox_replay(store, run_id, suite, spec=load_spec(weak))
    finally:
        store.dispose()
    assert [(s.step, s.recorded, s.now) for s in weaker.steps if s.differs] == [
        (4, "denied deny policy_block", "executed allow")
    ]
    assert weaker.diff["refunds"]["inserted"]
    result = CliRunner().invoke(
        app,
        ["replay", "--run", run_id, "--sandbox", "--suite", str(suite), "--spec", str(weak),
         "--store", url],
    )
    assert result.exit_code == 0, result.output
    assert "1 differ" in result.output and "recorded denied deny policy_block -> now executed allow" in result.output


# -- versions ---------------------------------------------------------------------------------


def run_started(store: Store, run_id: str) -> ev.RunStarted:
    (found,) = [
        e.event for e in iter_events(store, run_id=run_id) if isinstance(e.event, ev.RunStarted)
    ]
    assert isinstance(found, ev.RunStarted)
    return found


def test_a_run_records_the_tool_schema_fingerprint_and_the_versions_the_agent_reports(
    store_url: str, orders: Orders
) -> None:
    versions = {"prompt": "v3", "model": "gpt-4o-mini", "retrieval": "bm25-k8"}
    loaded = load_spec_text(SPEC, "shop.yaml")
    gw = Gateway(loaded, orders.tools(), store=store_url)
    changed_schema = load_spec_text(
        SPEC.replace(
            "get_order: {effect: read}",
            "get_order: {effect: read, input_schema: {type: object, "
            "properties: {order_id: {type: string, maxLength: 9}}}}",
        ),
        "shop.yaml",
    )
    gw2 = Gateway(changed_schema, orders.tools(), store=store_url)
    try:

        async def go() -> tuple[str, str, str]:
            async with gw.run(tenant="t", agent="bot", task="a", versions=versions) as one:
                pass
            async with gw.run(tenant="t", agent="bot", task="b") as two:
                pass
            async with gw2.run(tenant="t", agent="bot", task="c") as three:
                pass
            return one.run_id, two.run_id, three.run_id

        first, second, third = asyncio.run(go())
        gw.flush()
        gw2.flush()
        a, b, c = (run_started(gw.store, r) for r in (first, second, third))
        assert a.versions == versions and b.versions == {}
        assert a.tool_schema_fingerprint == b.tool_schema_fingerprint
        assert a.tool_schema_fingerprint is not None and len(a.tool_schema_fingerprint) == 64
        # Only the tool's schema changed: the tool-schema fingerprint moves with it.
        assert c.tool_schema_fingerprint != a.tool_schema_fingerprint
        with pytest.raises(InvalidInputError, match="versions"):
            gw.open_run(tenant="t", agent="bot", task="x", versions={"prompt": "v" * 201})
    finally:
        gw.close()
        gw2.close()


async def test_versions_and_confidence_over_http_are_recorded_and_bad_ones_are_a_4xx(stack: Stack) -> None:
    async with Gateway.connect(stack.url, api_key=stack.keys["bot"], workflow="shop") as gateway:
        async with gateway.run(agent="bot", task="v", versions={"prompt": "v7"}) as run:
            run_id = run.run_id
            await run.call("get_order", {"order_id": "o1"}, confidence=0.7)
    bot = stack.client("bot")
    bad = bot.post(
        "/v1/runs",
        json={"workflow": "shop", "agent": "bot", "task": "v", "versions": {"prompt": 3}},
    )
    assert bad.status_code == 422 and bad.json()["type"].startswith("urn:warden:problem:")
    live = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "c"}).json()
    too_sure = bot.post(
        f"/v1/runs/{live['run_id']}/actions",
        json={"tool": "get_order", "args": {"order_id": "o1"}, "confidence": 2},
    )
    assert too_sure.status_code == 422 and "confidence" in too_sure.text
    store = Store(stack.store_url, create=False)
    try:
        started = run_started(store, run_id)
        (requested,) = [
            e.event
            for e in iter_events(store, run_id=run_id)
            if isinstance(e.event, ev.ActionRequested)
        ]
    finally:
        store.dispose()
    assert started.versions == {"prompt": "v7"} and started.tool_schema_fingerprint
    assert isinstance(requested, ev.ActionRequested) and requested.confidence == 0.7


# -- approvals as labelled cases ---------------------------------------------------------------

ENV_PY = '''
from typing import Any

from warden import tool
from warden.evals import MemoryEnvironment


def make() -> MemoryEnvironment:
    def tools(env: MemoryEnvironment) -> list[Any]:
        @tool
        def get_order(order_id: str) -> dict[str, Any]:
            return dict(env.data["orders"][order_id])

        @tool(effect="money")
        def refund(order_id: str, amount: float) -> dict[str, Any]:
            env.data["orders"][order_id]["refunded"] = amount
            return {"ok": True}

        return [get_order, refund]

    return MemoryEnvironment(tools)
'''

AGENT_PY = '''
from warden.testing import ScriptedAgent


async def work(case, run):
    steps = case.input["steps"]
    await ScriptedAgent([(s["tool"], s["args"]) for s in steps]).run(run)
'''


def test_decided_approvals_export_as_cases_that_eval_run_loads_and_runs(
    store_url: str, orders: Orders, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from warden.evals import evaluate, load_suite

    since = datetime.now(UTC) - timedelta(minutes=5)
    gw = Gateway(load_spec_text(SPEC, "shop.yaml"), orders.tools(), store=store_url)
    try:

        async def go() -> None:
            async with gw.run(tenant="t", agent="bot", task="big refunds") as run:
                pending = [
                    await run.call("refund", {"order_id": o, "amount": a})
                    for o, a in (("o1", 150.0), ("o2", 200.0), ("o3", 300.0))
                ]
                ids = [p.approval_id for p in pending if isinstance(p, Pending)]
                lead = ["lead"]
                await gw.approve(ids[0], approver="ann", rationale="known customer", roles=lead)
                await gw.reject(ids[1], approver="ann", rationale="duplicate", roles=lead)
                await gw.approve(
                    ids[2],
                    approver="ann",
                    rationale="only the item",
                    args={"order_id": "o3", "amount": 90.0},
                    roles=lead,
                )

        asyncio.run(go())
        gw.flush()
    finally:
        gw.close()
    out_file = tmp_path / "suite" / "approvals.yaml"
    result = CliRunner().invoke(
        app,
        ["eval", "import-approvals", "--since", since.isoformat(), "--out", str(out_file),
         "--store", store_url],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 3 cases" in result.output and "1 edited" in result.output
    (tmp_path / "suite" / "shop.yaml").write_text(SPEC)
    (tmp_path / "suite" / "env.py").write_text(ENV_PY)
    (tmp_path / "suite" / "agent.py").write_text(AGENT_PY)
    owners = {"o1": "c1", "o2": "c1", "o3": "c1"}
    fixtures = {"orders": {o: {"id": o, "customer_id": c} for o, c in owners.items()}}
    (tmp_path / "suite" / "suite.yaml").write_text(
        json.dumps(
            {
                "name": "approvals",
                "spec": "shop.yaml",
                "environment": "env.py:make",
                "agent": "agent.py:work",
                "identity": "bot",
                "fixtures": fixtures,
                "cases": [{"include": "approvals.yaml"}],
            }
        )
    )
    suite = load_suite(tmp_path / "suite" / "suite.yaml")
    by_tag = {c.tags[1]: c for c in suite.cases}
    assert set(by_tag) == {"approved", "rejected", "edited"}
    approved, edited = by_tag["approved"], by_tag["edited"]
    assert [(d.effect, d.args) for d in approved.expect.decisions] == [
        ("allow", {"order_id": "o1", "amount": 150.0})
    ]
    assert by_tag["rejected"].expect.decisions[0].effect == "deny"
    assert [(d.effect, d.args["amount"]) for d in edited.expect.decisions] == [
        ("deny", 300.0),
        ("allow", 90.0),
    ]
    assert edited.input["recorded_facts"] == {"order": {"id": "o3", "customer_id": "c1"}}
    assert "ann (lead): only the item" in edited.description  # type: ignore[operator]
    # The policy sends every one of them to approval: the labels disagree with it, and the
    # decisions scorer says so, case by case.
    report = evaluate(tmp_path / "suite" / "suite.yaml")
    failed = {
        r.case.id: [s.name for t in r.trials for s in t.failures] for r in report.results
    }
    assert len(failed) == 3 and all("decisions" in names for names in failed.values()), failed
    assert {r.status for r in report.results} == {"failed"}


# -- confidence and calibration ----------------------------------------------------------------

CONFIDENT_AGENT_PY = '''
async def work(case, run):
    for s in case.input["steps"]:
        await run.call(s["tool"], s["args"], confidence=s.get("confidence"))
'''


def test_eval_reports_calibration_of_the_confidence_the_agent_reports(tmp_path: Path) -> None:
    """Two calls at 0.9, one of them held for approval; one at 0.2 that runs: ECE =
    2/3 x |0.5 - 0.9| + 1/3 x |1.0 - 0.2| = 0.5333."""
    from warden.evals import evaluate

    (tmp_path / "shop.yaml").write_text(SPEC)
    (tmp_path / "env.py").write_text(ENV_PY)
    (tmp_path / "agent.py").write_text(CONFIDENT_AGENT_PY)

    def step(order: str, amount: float, confidence: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {"tool": "refund", "args": {"order_id": order, "amount": amount}}
        if confidence is not None:
            out["confidence"] = confidence
        return out

    cases = [
        {"id": "sure-and-right", "input": {"steps": [step("o1", 20.0, 0.9)]}},
        {"id": "sure-and-held", "input": {"steps": [step("o2", 150.0, 0.9)]}},
        {"id": "unsure-and-right", "input": {"steps": [step("o3", 30.0, 0.2)]}},
        {"id": "silent", "input": {"steps": [step("o1", 10.0, None)]}},
    ]
    fixtures = {"orders": {o: {"id": o, "customer_id": "c1"} for o in ("o1", "o2", "o3")}}
    (tmp_path / "suite.yaml").write_text(
        json.dumps(
            {
                "name": "confidence",
                "spec": "shop.yaml",
                "environment": "env.py:make",
                "agent": "agent.py:work",
                "fixtures": fixtures,
                "cases": cases,
            }
        )
    )
    report = evaluate(tmp_path / "suite.yaml")
    cal = report.calibration
    assert cal is not None and cal.actions == 3
    assert cal.ece == pytest.approx(0.5333, abs=1e-4)
    filled = [(b.low, b.count, b.mean_confidence, b.accuracy) for b in cal.bins if b.count]
    assert filled == [(0.2, 1, 0.2, 1.0), (0.9, 2, 0.9, 0.5)]
    from warden.evals import markdown, to_json

    assert to_json(report)["calibration"]["ece"] == cal.ece
    assert "Calibration: ECE 0.533 over 3 actions" in markdown(report)


def test_a_confidence_out_of_range_is_refused(store_url: str, orders: Orders) -> None:
    gw = Gateway(load_spec_text(SPEC, "shop.yaml"), orders.tools(), store=store_url)
    try:

        async def go() -> None:
            async with gw.run(tenant="t", agent="bot", task="c") as run:
                with pytest.raises(InvalidInputError, match="confidence"):
                    await run.call("refund", {"order_id": "o1", "amount": 1.0}, confidence=1.5)

        asyncio.run(go())
    finally:
        gw.close()


def test_since_in_the_middle_of_a_run_rebuilds_the_run_from_its_earlier_steps(
    store_url: str, orders: Orders
) -> None:
    """No windows in the candidate: the run's first steps, before ``since``, are still read
    for its run_started and per-tool counts."""
    from datetime import UTC, datetime

    gw = Gateway(load_spec_text(SPEC, "shop.yaml"), orders.tools(), store=store_url)
    try:

        async def go() -> datetime:
            async with gw.run(tenant="t", agent="bot", task="spans") as run:
                for order_id, amount in CALLS[:3]:
                    await run.call("refund", {"order_id": order_id, "amount": amount})
                gw.flush()
                await asyncio.sleep(0.01)
                middle = datetime.now(UTC)
                for order_id, amount in CALLS[3:]:
                    await run.call("refund", {"order_id": order_id, "amount": amount})
            return middle

        since = asyncio.run(go())
        gw.flush()
    finally:
        gw.close()
    no_windows = (
        SPEC.replace("windows:\n", "")
        .replace("  per_customer: {tool: refund, group_by: facts.order.customer_id, period: 24h}\n", "")
        .replace("escalation:", with_rule("four_a_run", 'run.counts[\\"refund\\"] >= 4', "deny"))
    )
    store = Store(store_url, create=False)
    try:
        report = replay(store, load_spec_text(no_windows, "c.yaml"), since=since)
    finally:
        store.dispose()
    assert [(c.step, c.status, c.new_rules) for c in report.calls] == [
        (4, "changed", ("four_a_run",)),
        (5, "changed", ("four_a_run",)),
    ]


def test_a_tool_whose_effect_only_its_code_declares_needs_the_tools(
    recorded: tuple[Store, str], orders: Orders
) -> None:
    store, run_id = recorded
    spec = load_spec_text(SPEC.replace("refund: {effect: money}", "refund: {}"), "c.yaml")
    blind = replay(store, spec, run_id=run_id)
    assert blind.counts["not_replayable"] == 5
    assert "does not declare tool 'refund''s effect" in blind.of("not_replayable")[0].why[0]
    seeing = replay(store, spec, run_id=run_id, tools=orders.tools())
    assert seeing.counts == {"same": 5, "changed": 0, "not_replayable": 0, "not_decided": 0}


def test_the_demo_with_model_calls_routes_and_approvals_replays_unchanged(
    store_url: str,
) -> None:
    """``warden demo``'s traffic (model calls through a route, budgets, approvals, windows)
    under the shipped spec: every decided call the same, none unreplayable."""
    from datetime import UTC, datetime, timedelta

    from warden.spec import load_spec

    result = CliRunner().invoke(app, ["demo", "--store", store_url, "--tickets", "30", "-q"])
    assert result.exit_code == 0, result.output
    store = Store(store_url, create=False)
    try:
        report = replay(
            store, load_spec(DEMO / "workflow.yaml"), since=datetime.now(UTC) - timedelta(hours=1)
        )
    finally:
        store.dispose()
    assert report.counts["changed"] == report.counts["not_replayable"] == 0, report.to_json()
    routed = [c for c in report.of("same") if c.tool == "model:classify"]
    assert routed and report.counts["same"] > 100
