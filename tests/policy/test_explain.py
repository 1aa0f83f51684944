"""``explain``: each rule considered, its outcome, the values it read; the ``warden explain``
command on a store a real gateway wrote (SQLite and PostgreSQL), and the HTTP route."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SPEC, Effects, make_gateway
from typer.testing import CliRunner

from warden import Gateway, Pending
from warden.auth import KeyStore
from warden.cli._app import app
from warden.policy import Policy
from warden.policy._explain import CLEAN_PROVENANCE, explain, tool_context_from_spec
from warden.server import ServerSettings, create_app
from warden.spec import EffectClass, Tier, load_spec

EXAMPLE = Path(__file__).parents[2] / "examples" / "refund_triage" / "workflow.yaml"
TESTS = Path(__file__).parents[1]
ORDER = {
    "id": "o1",
    "customer_id": "c1",
    "amount": 200.0,
    "refunded": 0.0,
    "status": "delivered",
    "payment_method_id": "pm1",
}


def _refund_activation(amount: float, order: dict[str, Any]) -> dict[str, Any]:
    loaded = load_spec(EXAMPLE)
    context, _ = tool_context_from_spec(loaded, "issue_refund")
    return {
        "tool": context,
        "args": {
            "order_id": "o1",
            "customer_id": "c1",
            "amount": amount,
            "payment_method_id": "pm1",
        },
        "principal": {"agent": "refund-bot", "scopes": []},
        "tenant": "acme",
        "run": {"id": "r", "step": 1, "tier": "autonomous", "task_type": None, "counts": {}},
        "provenance": CLEAN_PROVENANCE,
        "window": {"refunds_per_customer_24h": 1, "refund_total_per_customer_24h": 20.0},
        "facts": {"order": order},
    }


def test_explain_lists_every_rule_for_the_tool_with_the_values_it_read() -> None:
    policy = Policy(load_spec(EXAMPLE))
    ex = explain(
        policy, "issue_refund", EffectClass.MONEY, Tier.AUTONOMOUS, _refund_activation(150.0, ORDER)
    )
    assert [r.name for r in ex.rules] == [r.name for r in policy.for_tool("issue_refund").rules]
    by_name = {r.name: r for r in ex.rules}
    over = by_name["refund_over_100_needs_approval"]
    assert over.outcome == "true"
    assert [v.shown() for v in over.values] == ["args.amount = 150.0", 'tool.name = "issue_refund"']
    paid = by_name["refund_not_above_amount_paid"]
    assert paid.outcome == "false"
    assert "variables.refundable_left = 200.0" in [v.shown() for v in paid.values]
    window = by_name["max_3_refunds_per_customer_per_day"]
    assert "window.refunds_per_customer_24h = 1" in [v.shown() for v in window.values]
    assert "no_deletes" in by_name and by_name["no_deletes"].outcome == "false"
    assert ex.decision.effect.value == "require_approval"
    assert ex.decision.rules == ("refund_over_100_needs_approval",)
    body = ex.to_json()
    assert body["rules"][0]["matched"] in ("true", "false", "error")
    assert json.dumps(body)  # plain JSON


def test_a_missing_path_is_shown_missing_and_its_rule_errors() -> None:
    policy = Policy(load_spec(EXAMPLE))
    order = {k: v for k, v in ORDER.items() if k != "refunded"}
    ex = explain(
        policy, "issue_refund", EffectClass.MONEY, Tier.AUTONOMOUS, _refund_activation(20.0, order)
    )
    paid = next(r for r in ex.rules if r.name == "refund_not_above_amount_paid")
    assert paid.outcome == "error" and paid.error
    # The rule reads the variable built from the missing field: shown missing, rule errors.
    left = next(v for v in paid.values if v.dotted == "variables.refundable_left")
    assert left.missing and left.shown() == "variables.refundable_left = <missing>"
    assert left.to_json() == {"path": "variables.refundable_left", "missing": True, "value": None}
    assert ex.decision.effect.value == "deny"
    assert "refund_not_above_amount_paid" in ex.decision.rules


def test_a_tool_without_rules_is_decided_by_the_default_alone() -> None:
    policy = Policy(load_spec(EXAMPLE))
    activation = _refund_activation(1.0, ORDER)
    ex = explain(policy, "escalate_to_human", EffectClass.WRITE, Tier.APPROVE, activation)
    assert [r.name for r in ex.rules] == ["no_deletes"]  # the rule for every tool
    assert ex.decision.rules == ("default:tier",)


# -- warden explain on a store a gateway wrote ---------------------------------------------


@pytest.fixture
def recorded(store_url: str, effects: Effects, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A run with a read (step 1), a payment sent for approval (step 2), an unknown tool
    (step 3): the spec file and store it was recorded with."""
    gateway: Gateway = make_gateway(store_url, effects)
    try:
        with gateway.sync() as gw, gw.run(tenant="acme", agent="bot", task="explain") as run:
            run.call("get_order", {"order_id": "o1"})
            paid = run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 300.0})
            assert isinstance(paid, Pending)
            run.call("teleport", {})
            run_id = run.run_id
        gateway.flush()
    finally:
        gateway.close()
    spec = tmp_path / "shop.yaml"
    spec.write_text(SPEC)
    yield {"store": store_url, "spec": spec, "run_id": run_id}


def _explain(rec: dict[str, Any], step: int, *extra: str, spec: Path | None = None) -> Any:
    return CliRunner().invoke(
        app,
        [
            "explain",
            rec["run_id"],
            str(step),
            "--store",
            rec["store"],
            "--spec",
            str(spec or rec["spec"]),
            *extra,
        ],
    )


def test_cli_explains_a_recorded_decision_as_json(recorded: dict[str, Any]) -> None:
    done = _explain(recorded, 2, "--json")
    assert done.exit_code == 0, done.output
    body = json.loads(done.output)
    assert body["tool"] == "pay" and body["step"] == 2
    assert body["action_id"] == f"{recorded['run_id']}.2"
    rules = {r["name"]: r for r in body["rules"]}
    assert set(rules) == {
        "big_pay_needs_approval",
        "three_per_day",
        "own_order_only",
        "pay_alone_up_to_100",
    }
    assert rules["big_pay_needs_approval"]["matched"] == "true"
    assert rules["own_order_only"]["matched"] == "false"
    values = {v["path"]: v["value"] for r in body["rules"] for v in r["values"]}
    assert values["args.amount"] == 300.0
    assert values["facts.order.customer_id"] == "c1"  # from the facts event
    assert values["window.pays_per_customer"] == 0  # from the decision event
    assert body["decision"]["effect"] == body["recorded"]["effect"] == "require_approval"
    assert body["same_decision"] is True and body["spec_changed"] is False
    assert body["differences"] == []


def test_cli_table_shows_rules_values_and_the_verdict(recorded: dict[str, Any]) -> None:
    done = _explain(recorded, 2)
    assert done.exit_code == 0, done.output
    assert "big_pay_needs_approval" in done.output
    assert "args.amount = 300.0" in done.output
    assert "the recomputed decision is the recorded one" in done.output


def test_cli_says_when_the_rules_changed_since(recorded: dict[str, Any], tmp_path: Path) -> None:
    changed = tmp_path / "changed.yaml"
    # Both thresholds moved: the 150 payment is now under the one that allows it alone.
    changed.write_text(
        SPEC.replace("args.amount > 100.0", "args.amount > 500.0").replace(
            "args.amount <= 100.0", "args.amount <= 500.0"
        )
    )
    done = _explain(recorded, 2, "--json", spec=changed)
    assert done.exit_code == 0, done.output
    body = json.loads(done.output)
    assert body["spec_changed"] is True and body["same_decision"] is False
    assert body["decision"]["effect"] == "allow"
    assert "effect: recorded require_approval, now allow" in body["differences"]
    assert "rules changed since the decision was recorded" in body["verdict"]


def test_cli_explains_a_read_with_the_tools_given(
    recorded: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(tmp_path / "effects.db"))
    done = _explain(recorded, 1, "--json", "--tools", f"{TESTS / 'server_tools.py'}:tools")
    assert done.exit_code == 0, done.output
    body = json.loads(done.output)
    assert body["tool"] == "get_order" and body["effect_class"] == "read"
    assert body["rules"] == [] and body["decision"]["effect"] == "allow"
    assert body["same_decision"] is True


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (9, "has no step 9"),
        (3, "(teleport) has no policy decision: it was denied (unknown_tool)"),
    ],
)
def test_cli_names_what_is_missing(recorded: dict[str, Any], step: int, message: str) -> None:
    done = _explain(recorded, step)
    assert done.exit_code == 1
    assert message in done.output
    assert "Traceback" not in done.output


def test_cli_refuses_another_workflows_spec(recorded: dict[str, Any]) -> None:
    done = _explain(recorded, 2, spec=EXAMPLE)
    assert done.exit_code == 1
    assert "is of workflow 'shop'" in done.output and "'refund_triage'" in done.output


def test_cli_unknown_run(recorded: dict[str, Any]) -> None:
    done = _explain({**recorded, "run_id": "run_nope"}, 1)
    assert done.exit_code == 1 and "no run 'run_nope'" in done.output


# -- GET /v1/runs/{run_id}/actions/{step}/explain -------------------------------------------


@pytest.fixture
async def api(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(tmp_path / "effects.db"))
    spec = tmp_path / "shop.yaml"
    spec.write_text(SPEC)
    application = create_app(
        ServerSettings(
            store=store_url,
            specs=[str(spec)],
            tools=[f"{TESTS / 'server_tools.py'}:tools"],
            auto_migrate=True,
        )
    )
    keys = KeyStore(application.state.warden.store)
    clients = {}
    for who, role, tenant, agent in [
        ("bot", "agent", "acme", "bot"),
        ("audit", "auditor", "acme", None),
        ("other-audit", "auditor", "globex", None),
    ]:
        key = keys.create(name=who, role=role, tenant=tenant, created_by="tests", agent=agent)[1]
        clients[who] = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://warden.test",
            headers={"Authorization": f"Bearer {key}"},
        )
    yield clients
    for client in clients.values():
        await client.aclose()
    application.state.warden.close()


async def test_route_explains_a_step_to_keys_that_see_the_run(
    api: dict[str, httpx.AsyncClient],
) -> None:
    bot = api["bot"]
    r = await bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "explain"})
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    r = await bot.post(
        f"/v1/runs/{run_id}/actions",
        json={"tool": "pay", "args": {"order_id": "o-bob", "customer_id": "c1", "amount": 20.0}},
    )
    assert r.json()["status"] == "denied", r.text

    r = await api["audit"].get(f"/v1/runs/{run_id}/actions/1/explain")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tool"] == "pay" and body["run_id"] == run_id
    rules = {rule["name"]: rule for rule in body["rules"]}
    assert rules["own_order_only"]["matched"] == "true"
    values = {v["path"]: v["value"] for v in rules["own_order_only"]["values"]}
    assert values == {
        "args.customer_id": "c1",
        "facts.order.customer_id": "bob",
        "tool.name": "pay",
    }
    assert body["decision"]["effect"] == body["recorded"]["effect"] == "deny"
    assert body["same_decision"] is True

    missing = await api["audit"].get(f"/v1/runs/{run_id}/actions/2/explain")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"] == "urn:warden:problem:not-found"
    assert "has no step 2" in missing.json()["detail"]

    hidden = await api["other-audit"].get(f"/v1/runs/{run_id}/actions/1/explain")
    assert hidden.status_code == 404
    assert hidden.json()["type"] == "urn:warden:problem:not-found"

    absent = await api["audit"].get("/v1/runs/run_nope/actions/1/explain")
    assert absent.status_code == 404
