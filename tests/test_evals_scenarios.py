"""The scenario bank format: YAML and JSONL cases, suites that include them, and errors
located by file, line and field path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warden.errors import SpecError
from warden.evals import (
    MemoryEnvironment,
    SQLiteEnvironment,
    diff_states,
    load_cases,
    load_suite,
    matches,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_and_jsonl_cases_load_into_one_suite(tmp_path: Path) -> None:
    write(
        tmp_path / "cases.yaml",
        """
- id: refund-1
  task_type: refund_request
  input: {ticket: t1}
  expect:
    required_calls: [issue_refund]
    forbidden: [{tool: issue_refund, args: {payment_method_id: pm_evil}}]
    decisions: [{tool: issue_refund, effect: deny, rule: no_foreign_methods}]
    max_cost_usd: "0.05"
  tags: [refund]
""",
    )
    write(
        tmp_path / "more.jsonl",
        json.dumps({"id": "status-1", "input": "where is my order?", "expect": {"state": {}}})
        + "\n\n",
    )
    suite = load_suite(
        write(
            tmp_path / "suite.yaml",
            """
name: demo
spec: workflow.yaml
cases:
  - include: cases.yaml
  - include: more.jsonl
  - {id: inline, input: 1}
""",
        )
    )
    assert [c.id for c in suite.cases] == ["refund-1", "status-1", "inline"]
    refund = suite.cases[0]
    assert [c.tool for c in refund.expect.required_calls] == ["issue_refund"]
    assert refund.expect.forbidden[0].args == {"payment_method_id": "pm_evil"}
    assert str(refund.expect.max_cost_usd) == "0.05"
    assert suite.cases[1].expect.state is not None and suite.cases[1].expect.state.only


def test_errors_name_the_file_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path / "cases.yaml",
        """
- id: ok
- id: bad
  expect:
    decisions:
      - {tool: pay, effect: maybe}
    max_latency_ms: -3
- id: typo
  expectt: {}
""",
    )
    with pytest.raises(SpecError) as caught:
        load_cases(path)
    lines = [str(i) for i in caught.value.issues]
    assert any(f"{path}:6: [1].expect.decisions[0].effect" in line for line in lines)
    assert any(f"{path}:7: [1].expect.max_latency_ms" in line for line in lines)
    assert f"{path}:9: [2].expectt: unknown key 'expectt'" in lines


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", '{"id": "a"}\n{"id": "b", "tags": 3}\nnot json\n')
    with pytest.raises(SpecError) as caught:
        load_cases(path)
    lines = [str(i) for i in caught.value.issues]
    assert lines[0].startswith(f"{path}:2: tags:")
    assert lines[1].startswith(f"{path}:3: <root>: not valid JSON")


def test_a_file_that_is_not_utf8_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(SpecError, match="not UTF-8 text"):
        load_cases(path)


def test_duplicate_ids_and_missing_includes_are_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "- {id: same}\n")
    suite = write(
        tmp_path / "suite.yaml",
        "name: s\nspec: w.yaml\ncases:\n  - include: a.yaml\n  - {id: same}\n  - include: gone.jsonl\n",
    )
    with pytest.raises(SpecError) as caught:
        load_suite(suite)
    text = str(caught.value)
    assert "duplicate case id 'same'" in text
    assert f"{suite}:6: cases[2].include: no file" in text


def test_sqlite_environment_resets_to_fixtures_and_diffs_by_primary_key() -> None:
    env = SQLiteEnvironment(
        "CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER); CREATE TABLE log (msg TEXT)",
        lambda e: [],
    )
    try:
        env.reset({"t": [{"id": "a", "n": 1}, {"id": "b", "n": 2}]})
        before = env.snapshot()
        with env.connect() as conn:
            conn.execute("UPDATE t SET n = 5 WHERE id = 'a'")
            conn.execute("DELETE FROM t WHERE id = 'b'")
            conn.execute("INSERT INTO log VALUES ('hi')")
        conn.close()
        diff = diff_states(before, env.snapshot())
        assert diff["t"].updated["a"].fields == {"n"}
        assert list(diff["t"].deleted) == ["b"]
        assert list(diff["log"].inserted.values()) == [{"msg": "hi"}]
        env.reset({"t": [{"id": "c", "n": 0}]})  # a fresh copy: nothing of the last case
        assert env.snapshot() == {"log": {}, "t": {"c": {"id": "c", "n": 0}}}
    finally:
        env.close()


def test_matches_is_a_subset_match_with_numbers_compared_by_value() -> None:
    assert matches({"a": 20}, {"a": 20.0, "b": 1})
    assert matches({"a": {"b": [1, 2]}}, {"a": {"b": [1.0, 2], "c": 0}})
    assert not matches({"a": 1}, {"a": True})
    assert not matches({"a": "1"}, {"a": 1})
    assert not matches({"z": None}, {})


def test_the_evals_public_names_are_pinned() -> None:
    import warden.evals

    assert sorted(warden.evals.__all__) == sorted(
        [
            "BUILT_IN",
            # replay, versions, approvals as cases, calibration
            "Calibration",
            "CalibrationBin",
            "ReplayReport",
            "ReplayedCall",
            "SandboxReport",
            "SandboxStep",
            "SpecDiff",
            "approval_cases",
            "calibration",
            "diff_specs",
            "replay",
            "sandbox_replay",
            "write_cases",
            # the model-driven agent
            "ModelAgent",
            "model_agent",
            "tool_definitions",
            "KINDS",
            "Action",
            "Attack",
            "AttackResult",
            "Instruction",
            "KindFigures",
            "PackReport",
            "adversarial",
            "follow_injections",
            "Baseline",
            "BlockingRun",
            "CallMatch",
            "Case",
            "CaseResult",
            "Check",
            "CollectionChanges",
            "CollectionDiff",
            "DecisionExpect",
            "Detector",
            "Environment",
            "EvalRunner",
            "Expectations",
            "Figures",
            "MemoryEnvironment",
            "Quarantine",
            "Report",
            "SQLiteEnvironment",
            "Score",
            "Scorer",
            "State",
            "StateExpect",
            "Suite",
            "Trial",
            "TrialResult",
            "Updated",
            "diff_states",
            "evaluate",
            "figures",
            "gate",
            "load_cases",
            "load_ref",
            "load_suite",
            "markdown",
            "matches",
            "pass_at_k",
            "pass_hat_k",
            "pii_leak",
            "pii_scorer",
            "to_json",
            "write_baseline",
            "write_junit",
        ]
    )


def test_memory_environment_copies_fixtures_per_case() -> None:
    env = MemoryEnvironment(lambda e: [])
    fixtures = {"orders": {"o1": {"status": "pending", "items": [1]}}}
    env.reset(fixtures)
    before = env.snapshot()
    env.data["orders"]["o1"]["status"] = "cancelled"
    env.data["orders"]["o2"] = {"status": "pending"}
    diff = diff_states(before, env.snapshot())
    assert diff["orders"].updated["o1"].fields == {"status"}
    assert list(diff["orders"].inserted) == ["o2"]
    env.reset(fixtures)  # the fixtures themselves were never touched
    assert env.snapshot() == {"orders": {"o1": {"status": "pending", "items": [1]}}}
