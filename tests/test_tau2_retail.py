"""τ²-bench retail as a Warden workflow (examples/tau2_retail), on the bundled subset:
gold actions pass, the database ends as the store alone leaves it, and generated
violations of each rule are refused by that rule. The full data set runs in
benchmarks/tau2_retail.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
if str(ROOT) not in sys.path:  # the examples are not an installed package
    sys.path.insert(0, str(ROOT))

from examples.tau2_retail import check  # noqa: E402
from examples.tau2_retail.data import Action, Task, load  # noqa: E402
from examples.tau2_retail.harness import SPEC, Harness, apply_directly, conversation  # noqa: E402
from examples.tau2_retail.tools import CANCEL_REASONS  # noqa: E402
from examples.tau2_retail.violations import RULES, generate  # noqa: E402
from warden import Allowed, Denied  # noqa: E402

DATASET = load()
#: three tasks whose violations cover every rule (the whole subset: python -m examples.tau2_retail.check)
FAST = {"74", "100", "105"}


def task(task_id: str) -> Task:
    return next(t for t in DATASET.tasks if t.id == task_id)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> check.SuiteReport:
    store = f"sqlite:///{tmp_path_factory.mktemp('tau2') / 'warden.db'}"
    return asyncio.run(check.run_suite(load(task_ids=FAST), store=store))


def test_gold_actions_pass_and_leave_the_database_as_the_store_alone_would(store_url: str) -> None:
    report = asyncio.run(check.run_suite(DATASET, store=store_url, violations=False))
    assert len(report.tasks) == 14
    assert report.false_positives == []
    assert report.state_failures == []
    # The two gold actions the store itself refuses are refused first by the rule that
    # says why (task 64 exchanges a pending order; task 105's gift card is short).
    assert {(t, o.rules) for t, o, _ in report.store_refused} == {
        ("64", ("exchange_only_delivered_orders",)),
        ("105", ("gift_card_covers_price_difference",)),
    }
    writes = [o for t in report.tasks for o in t.outcomes if o.approval_rules]
    assert writes and all(o.status == "executed" for o in writes)
    assert {o.approval_rules for o in writes} == {("writes_need_user_confirmation",)}


def test_every_rule_blocks_its_generated_violations(suite: check.SuiteReport) -> None:
    assert suite.broken == []
    assert set(suite.rules) == set(RULES)
    for figures in suite.rules.values():
        assert figures.total > 0, figures.rule
        assert figures.rate is not None and figures.rate >= check.BLOCK_TARGET, figures.missed
    assert suite.passed


def test_the_report_names_every_rule_and_the_verdict(suite: check.SuiteReport) -> None:
    text = suite.render()
    assert all(rule in text for rule in RULES)
    assert text.endswith("PASS")
    data = suite.to_json()
    assert data["false_positives"] == [] and data["state_success"] == len(FAST)


def test_a_policy_without_a_rule_lets_its_violations_through(tmp_path: Path) -> None:
    raw = yaml.safe_load(SPEC.read_text())
    raw["policies"] = [p for p in raw["policies"] if p["name"] != "cancel_only_pending_orders"]
    weakened = tmp_path / "workflow.yaml"
    weakened.write_text(yaml.safe_dump(raw, sort_keys=False))
    cases = [
        v for v in generate(task("16"), DATASET.state()) if v.rule == "cancel_only_pending_orders"
    ]
    assert cases

    async def outcomes(spec: Path, name: str) -> list[tuple[str, tuple[str, ...]]]:
        harness = Harness(DATASET, store=f"sqlite:///{tmp_path / name}", spec=spec)
        try:
            return [(o.status, o.rules) for _, o in [await harness.violation(v) for v in cases]]
        finally:
            harness.close()

    strict = asyncio.run(outcomes(SPEC, "strict.db"))
    weak = asyncio.run(outcomes(weakened, "weak.db"))
    assert all(s == "denied" and "cancel_only_pending_orders" in r for s, r in strict)
    # Only the customer's confirmation stands between the agent and the write.
    assert weak == [("pending", ("writes_need_user_confirmation",))] * len(cases)


def test_an_agent_acts_only_for_the_user_it_authenticated(tmp_path: Path) -> None:
    harness = Harness(DATASET, store=f"sqlite:///{tmp_path / 'w.db'}")
    state = harness.state
    users = sorted(state.ids("users"))
    me, other = (state.get("users", u) for u in users[:2])
    assert me is not None and other is not None

    product = next(iter(DATASET.db["products"]))

    async def scenario() -> list[object]:
        run = harness.open("identity")
        order = other["orders"][0]
        results = [
            await run.call("get_order_details", {"order_id": order}),  # nobody authenticated
            await run.call("get_product_details", {"product_id": product}),
            await run.call("find_user_id_by_email", {"email": me["email"]}),
            await run.call("get_product_details", {"product_id": product}),
            await run.call("get_order_details", {"order_id": me["orders"][0]}),
            await run.call("get_order_details", {"order_id": order}),  # someone else's
            await run.call("find_user_id_by_email", {"email": other["email"]}),
            await run.call("get_user_details", {"user_id": other["user_id"]}),
        ]
        run.finish("completed")
        # A new conversation may authenticate the other user.
        run = harness.open("identity-2")
        results.append(await run.call("find_user_id_by_email", {"email": other["email"]}))
        results.append(await run.call("get_order_details", {"order_id": order}))
        run.finish("completed")
        return results

    try:
        results = asyncio.run(scenario())
    finally:
        harness.close()
    rules = [r.rules if isinstance(r, Denied) else "allowed" for r in results]
    assert rules == [
        ("act_only_for_authenticated_user",),
        ("information_only_after_authentication",),
        "allowed",
        "allowed",
        "allowed",
        ("act_only_for_authenticated_user",),
        ("one_user_per_conversation",),
        ("act_only_for_authenticated_user",),
        "allowed",
        "allowed",
    ]
    assert all(isinstance(r, Allowed) for r in results if not isinstance(r, Denied))


def test_a_confirmed_write_proposed_again_runs_once(tmp_path: Path) -> None:
    """The same call twice in a conversation is one action (its derived idempotency key):
    the second answers the first's result and refunds nothing again; a cancellation of the
    same order that differs (another reason) is a new action, refused by the status rule."""
    harness = Harness(DATASET, store=f"sqlite:///{tmp_path / 'w.db'}")
    login, cancel = (
        next(a for a in task("16").actions if a.name == name)
        for name in ("find_user_id_by_name_zip", "cancel_pending_order")
    )
    order_id = cancel.arguments["order_id"]
    other_reason = next(r for r in CANCEL_REASONS if r != cancel.arguments["reason"])

    async def scenario() -> tuple[object, ...]:
        run = harness.open("16-again")
        await run.call(login.name, dict(login.arguments))
        first = await harness.propose(run, cancel)
        again = await run.call(cancel.name, dict(cancel.arguments))
        other = await run.call(cancel.name, dict(cancel.arguments, reason=other_reason))
        run.finish("completed")
        return first, again, other

    try:
        harness.state.reset()
        first, again, other = asyncio.run(scenario())
        order = harness.state.get("orders", order_id)
    finally:
        harness.close()
    assert getattr(first, "status", None) == "executed"
    assert isinstance(again, Allowed) and again.replayed
    assert isinstance(other, Denied) and other.rules == ("cancel_only_pending_orders",)
    assert order is not None and order["status"] == "cancelled"
    refunds = [p for p in order["payment_history"] if p["transaction_type"] == "refund"]
    assert len(refunds) == 1


def test_state_resets_diffs_and_hashes_like_the_direct_application() -> None:
    state = DATASET.state()
    fresh = state.digest()
    actions = conversation(task("40"), state)
    assert apply_directly(state, actions) == [None] * len(actions)
    assert state.touched()["orders"] and state.digest() != fresh
    twin = DATASET.state()
    apply_directly(twin, actions)
    assert state.diff(twin) == [] and state.digest() == twin.digest()
    assert state.diff(DATASET.state()) == sorted(
        f"{t}/{k}" for t, records in state.changes().items() for k in records
    )
    state.reset()
    assert state.digest() == fresh and state.changes() == {
        "products": {},
        "users": {},
        "orders": {},
    }


def test_state_is_an_eval_environment_reset_to_any_fixture() -> None:
    """``reset(fixtures)``, ``snapshot()``, ``tools()``: the eval framework's protocol."""
    state = DATASET.state()
    tools = state.tools()
    user = next(iter(DATASET.db["users"].values()))
    find = Action("find_user_id_by_email", {"email": user["email"]})
    assert apply_directly(state, [find]) == [None]
    smaller = {
        **DATASET.db,
        "users": {k: v for k, v in DATASET.db["users"].items() if k != user["user_id"]},
    }
    state.reset(smaller)
    assert state.tools() is tools  # the same functions reach the new fixture
    assert apply_directly(state, [find]) == ["user not found"]
    assert user["user_id"] not in state.snapshot()["users"]
    state.reset(DATASET.db)
    assert apply_directly(state, [find]) == [None]


def test_the_spec_validates_against_its_tools_without_warnings() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "warden", "validate", str(SPEC),
         "--tools", "examples.tau2_retail.tools:default_tools"],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "21" in done.stdout and "warning" not in done.stderr + done.stdout


def test_calculate_evaluates_arithmetic_only() -> None:
    state = DATASET.state()
    errors = apply_directly(
        state,
        [
            Action("calculate", {"expression": "155.33 - 147.05 + (268.77 - 235.13) * 2"}),
            Action("calculate", {"expression": "__import__('os').system('true')"}),
            Action("calculate", {"expression": "1 / 0"}),
        ],
    )
    assert errors[0] is None
    assert errors[1] is not None and "cannot calculate" in errors[1]
    assert errors[2] is not None and "cannot calculate" in errors[2]


def test_check_command_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert check.main(["--tasks", "40", "--no-violations"]) == 0
    assert (
        "state success (database equal to the direct application): 1/1" in capsys.readouterr().out
    )
    assert check.main(["--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load the data:") and err.count("\n") == 1
