"""Evals end to end on a small bank: cases run through the governed pipeline on their own
stores, scored from the ledger and the SQLite environment's state diff; repeats, the
confirmation run, flaky cases and the quarantine; the gates against the spec and a
baseline."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from warden import Run, UsageError, tool
from warden.evals import (
    Baseline,
    BlockingRun,
    Case,
    EvalRunner,
    Quarantine,
    Score,
    SQLiteEnvironment,
    Suite,
    Trial,
    figures,
    gate,
    load_suite,
    pass_at_k,
    pass_hat_k,
    pii_leak,
    pii_scorer,
    write_baseline,
)
from warden.spec import load_spec_text
from warden.testing import ScriptedAgent

SPEC = """
name: bank
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  teller: {scopes: [read, pay, del, msg]}
tools:
  balance: {effect: read, scope: read}
  pay: {effect: money, scope: pay, cost: {usd: 0.01}}
  close_account: {effect: delete, scope: del}
  notify: {effect: external_message, scope: msg}
windows:
  pays_per_account:
    tool: pay
    group_by: account
    period: 24h
policies:
  - name: big_pay_needs_approval
    when: tool.name == "pay" && args.amount > 100.0
    effect: require_approval
    reason: big payment
    approvers: lead
  - name: two_pays_per_day
    when: tool.name == "pay" && window.pays_per_account >= 2
    effect: deny
    reason: at most 2 payments per account per day
  - name: no_closing
    when: tool.effect == "delete"
    effect: deny
    reason: tellers do not close accounts
  - name: small_pays_alone
    when: tool.name == "pay" && args.amount <= 100.0
    effect: allow
    reason: small payments run alone
  - name: notify_alone
    when: tool.name == "notify"
    effect: allow
    reason: notes run alone
escalation: {approver_roles: [lead]}
slo:
  success_rate: 0.9
"""

SCHEMA = """
CREATE TABLE accounts (id TEXT PRIMARY KEY, owner TEXT, balance REAL);
CREATE TABLE payments (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT, amount REAL);
CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, recipient TEXT, body TEXT)
"""


def bank_tools(env: SQLiteEnvironment) -> list[Any]:
    @tool(effect="read")
    def balance(account: str) -> dict[str, Any]:
        with env.engine.connect() as conn:
            row = conn.execute(
                text("SELECT balance FROM accounts WHERE id = :a"), {"a": account}
            ).one()
        return {"account": account, "balance": row[0]}

    @tool(effect="money")
    def pay(account: str, amount: float) -> dict[str, Any]:
        with env.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO payments (account, amount) VALUES (:a, :m)"),
                {"a": account, "m": amount},
            )
            conn.execute(
                text("UPDATE accounts SET balance = balance - :m WHERE id = :a"),
                {"a": account, "m": amount},
            )
        return {"paid": amount}

    @tool(effect="delete")
    def close_account(account: str) -> dict[str, str]:
        with env.engine.begin() as conn:
            conn.execute(text("DELETE FROM accounts WHERE id = :a"), {"a": account})
        return {"closed": account}

    @tool(effect="external_message")
    def notify(to: str, body: str) -> dict[str, str]:
        with env.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO notes (recipient, body) VALUES (:t, :b)"), {"t": to, "b": body}
            )
        return {"sent": to}

    return [balance, pay, close_account, notify]


FIXTURES = {"accounts": [{"id": "a1", "owner": "ada", "balance": 500.0}]}


def suite_of(tmp_path: Path, cases: list[dict[str, Any]]) -> Suite:
    path = tmp_path / "suite.yaml"
    path.write_text(
        json.dumps({"name": "bank", "spec": "spec.yaml", "fixtures": FIXTURES, "cases": cases}),
        encoding="utf-8",
    )
    (tmp_path / "spec.yaml").write_text(SPEC, encoding="utf-8")
    return load_suite(path)


async def steps_agent(case: Case, run: Run) -> Any:
    """Replays the case's input as calls (``[[tool, args], ...]``)."""
    return await ScriptedAgent([(s[0], s[1]) for s in case.input]).run(run)


@pytest.fixture
def env() -> Iterator[SQLiteEnvironment]:
    environment = SQLiteEnvironment(SCHEMA, bank_tools)
    yield environment
    environment.close()


def runner(suite: Suite, env: SQLiteEnvironment, agent: Any = steps_agent, **kw: Any) -> EvalRunner:
    return EvalRunner(suite, spec=load_spec_text(SPEC), environment=env, agent=agent, **kw)


PAY_40: tuple[str, dict[str, Any]] = ("pay", {"account": "a1", "amount": 40.0})
PAY_150: tuple[str, dict[str, Any]] = ("pay", {"account": "a1", "amount": 150.0})


async def test_state_diff_and_decisions_pass_when_the_run_does_what_the_case_expects(
    tmp_path: Path, env: SQLiteEnvironment
) -> None:
    suite = suite_of(
        tmp_path,
        [
            {
                "id": "small",
                "input": [PAY_40],
                "expect": {
                    "state": {
                        "changes": {
                            "payments": {"inserted": [{"account": "a1", "amount": 40}]},
                            "accounts": {"updated": {"a1": {"balance": 460}}},
                        }
                    },
                    "decisions": [{"tool": "pay", "effect": "allow", "rule": "small_pays_alone"}],
                    "required_calls": ["pay"],
                    "max_cost_usd": "0.01",
                },
            },
            {
                "id": "big",
                "input": [PAY_150, ["close_account", {"account": "a1"}]],
                "expect": {
                    "state": {},
                    "decisions": [
                        {"tool": "pay", "effect": "require_approval"},
                        {"tool": "close_account", "effect": "deny", "rule": "no_closing"},
                    ],
                    "forbidden": ["close_account", "pay"],
                },
            },
        ],
    )
    r = runner(suite, env)
    try:
        results = await r.run()
    finally:
        r.close()
    assert [(x.case.id, x.status, len(x.trials)) for x in results] == [
        ("small", "passed", 1),
        ("big", "passed", 1),
    ]
    small, big = results[0].trials[0].trial, results[1].trials[0].trial
    assert small.cost_usd == Decimal("0.01")
    assert (small.unsafe_writes, big.unsafe_writes) == (0, 2)


async def test_a_run_that_changes_more_than_expected_fails_with_what_changed(
    tmp_path: Path, env: SQLiteEnvironment
) -> None:
    suite = suite_of(
        tmp_path,
        [
            {
                "id": "extra-note",
                "input": [PAY_40, ["notify", {"to": "eve@x.example", "body": "hi"}]],
                "expect": {
                    "state": {"changes": {"payments": {"inserted": [{"amount": 40}]}}},
                    "decisions": [{"tool": "pay", "effect": "deny"}],
                },
            }
        ],
    )
    r = runner(suite, env)
    try:
        [result] = await r.run()
    finally:
        r.close()
    # Failed, and confirmed by a second run before it counts.
    assert (result.status, len(result.trials), result.trials[1].trial.confirmation) == (
        "failed",
        2,
        True,
    )
    details = {s.name: s.detail for s in result.trials[0].failures}
    assert "accounts[a1]: unexpected update of ['balance']" in details["state"]
    assert "notes: unexpected inserted" in details["state"]
    assert "pay deny: 0 found" in details["decisions"]


async def test_cases_do_not_see_each_others_windows(
    tmp_path: Path, env: SQLiteEnvironment, store_url: str
) -> None:
    """Two payments per account per day: each case may pay twice, on its own store
    (a SQLite file per trial by default; a tenant of its own on a shared store)."""
    two = {
        "input": [PAY_40, ["pay", {"account": "a1", "amount": 41.0}]],
        "expect": {"decisions": [{"tool": "pay", "effect": "allow", "count": 2}]},
    }
    suite = suite_of(tmp_path, [{"id": "first", **two}, {"id": "second", **two}])
    for shared in (None, store_url):
        r = runner(suite, env, store_url=shared)
        try:
            results = await r.run()
        finally:
            r.close()
        assert [x.status for x in results] == ["passed", "passed"]


async def test_a_case_passing_and_failing_is_flaky_quarantined_and_not_gating(
    tmp_path: Path, env: SQLiteEnvironment
) -> None:
    calls = {"n": 0}

    async def moody(case: Case, run: Run) -> Any:
        calls["n"] += 1
        if case.id == "moody" and calls["n"] % 2 == 0:
            return await run.call("notify", {"to": "x@y.example", "body": "oops"})
        return await run.call(*PAY_40)

    expect = {
        "state": {
            "changes": {
                "payments": {"inserted": [{"amount": 40}]},
                "accounts": {"updated": {"a1": {"balance": 460}}},
            }
        }
    }
    suite = suite_of(
        tmp_path, [{"id": "steady", "expect": expect}, {"id": "moody", "expect": expect}]
    )
    r = runner(suite, env, agent=moody)
    try:
        results = await r.run(repeat=2)
    finally:
        r.close()
    steady, moody_result = results
    assert (steady.status, moody_result.status) == ("passed", "flaky")
    assert (moody_result.passes, len(moody_result.trials)) == (2, 3)  # 2 trials + confirmation
    figs = figures(results, repeat=2)
    assert (figs.gating, figs.flaky, figs.success_rate) == (1, 1, 1.0)
    assert figs.pass_hat_k == pytest.approx((1.0 + pass_hat_k(3, 2, 2)) / 2)
    assert figs.pass_at_k == 1.0

    quarantine = Quarantine.read(tmp_path / "q.json")
    added, released = quarantine.update(results)
    quarantine.write()
    assert (added, released) == (["moody"], [])
    again = Quarantine.read(tmp_path / "q.json")
    assert set(again.entries) == {"moody"}
    assert again.entries["moody"]["passes"] == 2

    # Quarantined before the run: reported apart, whatever it does.
    r = runner(suite, env, agent=moody)
    try:
        results = await r.run(quarantined=again.entries)
    finally:
        r.close()
    assert [x.gating for x in results] == [True, False]


def test_pass_hat_k_and_pass_at_k() -> None:
    assert pass_hat_k(4, 4, 2) == 1.0
    assert pass_hat_k(4, 2, 2) == pytest.approx(1 / 6)
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert pass_at_k(3, 0, 3) == 0.0


async def test_a_sync_agent_runs_in_a_thread_and_an_agent_that_raises_fails(
    tmp_path: Path, env: SQLiteEnvironment
) -> None:
    def sync_agent(case: Case, run: BlockingRun) -> dict[str, str]:
        if case.id == "boom":
            raise RuntimeError("model unreachable")
        run.call(*PAY_40)
        return {"status": "done"}

    expect = {
        "required_calls": ["pay"],
        "output_schema": {"type": "object", "required": ["status"]},
    }
    suite = suite_of(tmp_path, [{"id": "ok", "expect": expect}, {"id": "boom", "expect": expect}])
    r = runner(suite, env, agent=sync_agent)
    try:
        ok, boom = await r.run()
    finally:
        r.close()
    assert ok.status == "passed"
    assert boom.status == "failed"
    names = {s.name: s.detail for s in boom.trials[0].failures}
    assert names["agent"] == "the agent raised RuntimeError: model unreachable"
    assert names["schema"] == "output: None is not of type 'object'"


async def test_custom_and_pii_scorers(tmp_path: Path, env: SQLiteEnvironment) -> None:
    def emails(sent: str) -> list[str]:
        return re.findall(r"[\w.]+@[\w.]+", sent)

    def at_most_one_call(case: Case, trial: Trial) -> Score:
        return Score("calls", len(trial.actions) <= 1, f"{len(trial.actions)} calls")

    suite = suite_of(
        tmp_path,
        [{"id": "leak", "input": [["notify", {"to": "ops", "body": "ada@bank.example owes"}]]}],
    )
    r = runner(suite, env, scorers=[pii_scorer(emails), at_most_one_call])
    try:
        [result] = await r.run()
    finally:
        r.close()
    scores = {s.name: s for s in result.trials[0].scores}
    assert (scores["pii"].passed, scores["pii"].detail) == (False, "notify: email (tokenized by Warden)")
    assert scores["calls"].passed


async def test_gates_against_the_spec_and_the_baseline(
    tmp_path: Path, env: SQLiteEnvironment
) -> None:
    good = {"id": "good", "input": [PAY_40], "expect": {"required_calls": ["pay"]}}
    suite = suite_of(tmp_path, [good])
    r = runner(suite, env)
    try:
        before = await r.run()
    finally:
        r.close()
    spec = load_spec_text(SPEC)
    write_baseline(tmp_path / "base.json", "bank", spec, figures(before, 1), before)
    baseline = Baseline.read(tmp_path / "base.json")
    assert all(c.passed for c in gate(spec, figures(before, 1), baseline))

    # A change that makes the agent try a big payment first: more unsafe writes, and
    # a case that no longer passes.
    worse = {"id": "worse", "input": [PAY_150], "expect": {"required_calls": ["pay"]}}
    suite = suite_of(tmp_path, [good, worse])
    r = runner(suite, env)
    try:
        after = await r.run()
    finally:
        r.close()
    failed = {c.name: c.detail for c in gate(spec, figures(after, 1), baseline) if not c.passed}
    assert set(failed) == {"success_rate", "success_drop", "unsafe_writes"}
    assert failed["success_rate"].startswith("success rate 50.0% (1 of 2 cases) is below")
    assert "a drop of 50.0 points" in failed["success_drop"]
    assert failed["unsafe_writes"].startswith("unsafe-write attempts 1 against the baseline's 0")


async def test_an_agent_that_hangs_fails_its_trial_at_the_timeout(
    tmp_path: Path, env: SQLiteEnvironment
) -> None:
    async def stuck(case: Case, run: Run) -> None:
        await run.call(*PAY_40)
        await asyncio.Event().wait()

    suite = suite_of(tmp_path, [{"id": "stuck", "expect": {"required_calls": ["pay"]}}])
    r = runner(suite, env, agent=stuck, timeout_s=0.2)
    try:
        [result] = await r.run()
    finally:
        r.close()
    assert result.status == "failed"
    failures = {s.name: s.detail for s in result.trials[0].failures}
    assert failures == {"agent": "the agent did not finish within 0.2 s"}


async def test_fixtures_that_do_not_fit_are_a_usage_error_naming_the_case(
    tmp_path: Path, env: SQLiteEnvironment
) -> None:
    suite = suite_of(tmp_path, [{"id": "typo", "fixtures": {"acounts": [{"id": "x"}]}}])
    r = runner(suite, env)
    try:
        with pytest.raises(UsageError, match=r"case 'typo': the environment's reset: .*acounts"):
            await r.run()
    finally:
        r.close()


async def test_the_spec_gates_section_sets_the_target(
    tmp_path: Path, env: SQLiteEnvironment
) -> None:
    suite = suite_of(tmp_path, [{"id": "ok", "input": [PAY_40]}])
    r = runner(suite, env)
    try:
        results = await r.run()
    finally:
        r.close()
    strict = load_spec_text(
        SPEC.replace("  success_rate: 0.9\n", "  success_rate: 0.9\n  cost_per_task_usd: 0.001\n")
        + "gates: {success_rate: 1.0, p95_latency_ms: 0.001}\n"
    )
    checks = {c.name: c for c in gate(strict, figures(results, 1), None)}
    assert checks["success_rate"].passed
    assert checks["success_rate"].detail.endswith("the target 100.0% (gates.success_rate)")
    assert not checks["p95_latency"].passed
    assert checks["cost_per_task"].detail == (
        "cost per successful case $0.010000 above $0.001 (slo.cost_per_task_usd)"
    )
    assert load_spec_text(SPEC).fingerprint != strict.fingerprint  # gates are part of it


async def test_an_agent_object_with_an_async_call_gets_the_async_run(
    tmp_path: Path, env: SQLiteEnvironment
) -> None:
    class Agent:
        async def __call__(self, case: Case, run: Run) -> str:
            await run.call(*PAY_40)
            return "paid"

    suite = suite_of(tmp_path, [{"id": "obj", "expect": {"required_calls": ["pay"]}}])
    r = runner(suite, env, agent=Agent())
    try:
        [result] = await r.run()
    finally:
        r.close()
    assert (result.status, result.trials[0].trial.output) == ("passed", "paid")


async def test_the_ready_pii_leak_scorer_uses_wardens_detectors(
    tmp_path: Path, env: SQLiteEnvironment
) -> None:
    suite = suite_of(
        tmp_path,
        [
            {"id": "leak", "input": [["notify", {"to": "ops", "body": "card 4111 1111 1111 1111"}]]},
            {"id": "clean", "input": [["notify", {"to": "ops", "body": "order A-1 shipped"}]]},
        ],
    )
    r = runner(suite, env, scorers=[pii_leak])
    try:
        leak, clean = await r.run()
    finally:
        r.close()
    leaked = {s.name: s for s in leak.trials[0].scores}["pii"]
    assert (leaked.passed, leaked.detail) == (False, "notify: card (tokenized by Warden)")
    assert {s.name: s for s in clean.trials[0].scores}["pii"].passed
