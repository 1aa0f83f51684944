"""``warden policy test``: fixtures decided by the compiled rules; the demo's own fixtures
run here, so the suite (and CI) fails when the demo policy and its tests disagree."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from warden.cli._app import app
from warden.spec import Effect, load_spec

ROOT = Path(__file__).parents[2]
DEMO_TESTS = ROOT / "examples" / "refund_triage" / "policy_tests"

SPEC = """
name: tiny
version: "1"
owner: tests@example.com
tier: autonomous
tools:
  pay: {effect: money}
  read: {effect: read}
facts:
  order: {tool: read, args: {id: args.order_id}}
windows:
  pays_24h: {tool: pay, period: 24h}
policies:
  - name: big_pay
    when: tool.name == "pay" && args.amount > 100.0
    effect: require_approval
    reason: big
  - name: not_own_order
    when: tool.name == "pay" && args.customer_id != facts.order.customer_id
    effect: deny
    reason: not theirs
  - name: too_many
    when: tool.name == "pay" && window.pays_24h >= 3
    effect: deny
    reason: too many
  - name: pay_alone_up_to_100
    when: tool.name == "pay" && args.amount <= 100.0
    effect: allow
    reason: autonomous money needs a threshold
"""

GOOD_CASE = """
  - name: small pay
    tool: pay
    args: {order_id: o1, customer_id: c1, amount: 5.0}
    facts: {order: {customer_id: c1}}
    window: {pays_24h: 0}
    expect: {effect: allow, rules: [pay_alone_up_to_100], matched: [pay_alone_up_to_100]}
"""


def _write(tmp: Path, cases: str, spec: str = SPEC, name: str = "pay_test.yaml") -> Path:
    (tmp / "spec.yaml").write_text(spec)
    tests = tmp / "tests"
    tests.mkdir(exist_ok=True)
    (tests / name).write_text(f"spec: ../spec.yaml\ncases:{cases}")
    return tests


def _run(*args: str | Path) -> Any:
    return CliRunner().invoke(app, ["policy", "test", *map(str, args)])


def test_the_demo_fixtures_pass_from_the_command_line(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "warden", "policy", "test", str(DEMO_TESTS), "--junit", str(junit)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("passed, 0 failed")
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("failures") == "0" and root.get("errors") == "0"
    assert int(root.get("tests") or 0) == len(root.findall(".//testcase")) >= 15


def test_the_demo_fixtures_cover_every_rule_and_effect() -> None:
    done = _run(DEMO_TESTS, "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    spec = load_spec(ROOT / "examples" / "refund_triage" / "workflow.yaml").spec
    deciding = {rule for case in report["cases"] for rule in case["got"]["rules"]}
    enforced = {rule.name for rule in spec.policies if rule.mode != "shadow"}
    assert enforced <= deciding
    effects = {case["got"]["effect"] for case in report["cases"]}
    assert {Effect.ALLOW, Effect.DENY, Effect.REQUIRE_APPROVAL} <= set(map(Effect, effects))
    assert report["failed"] == 0 and report["passed"] == len(report["cases"])


def test_a_failing_case_names_its_line_expected_got_and_matched(tmp_path: Path) -> None:
    tests = _write(
        tmp_path,
        GOOD_CASE
        + """
  - name: big pay wrongly expected allowed
    tool: pay
    args: {order_id: o1, customer_id: c1, amount: 500.0}
    facts: {order: {customer_id: c1}}
    window: {pays_24h: 0}
    expect: {effect: allow}
""",
    )
    done = _run(tests)
    assert done.exit_code == 1
    lines = done.output.strip().splitlines()
    fixture = tests / "pay_test.yaml"
    case_line = (
        fixture.read_text().splitlines().index("  - name: big pay wrongly expected allowed") + 1
    )
    failing = [ln for ln in lines if "FAIL" in ln]
    assert len(failing) == 1
    assert f"{fixture}:{case_line}: big pay wrongly expected allowed" in failing[0]
    assert "expected allow, got require_approval by big_pay" in failing[0]
    assert "matched: big_pay" in failing[0]
    assert lines[-1] == "1 passed, 1 failed"


def test_expected_rules_and_matched_are_compared(tmp_path: Path) -> None:
    tests = _write(
        tmp_path,
        """
  - name: deny by the wrong rule
    tool: pay
    args: {order_id: o1, customer_id: c2, amount: 5.0}
    facts: {order: {customer_id: c1}}
    window: {pays_24h: 0}
    expect: {effect: deny, rules: [too_many], matched: [not_own_order, too_many]}
""",
    )
    done = _run(tests)
    assert done.exit_code == 1
    assert "expected rules ['too_many'], got ['not_own_order']" in done.output
    assert (
        "expected matched ['not_own_order', 'too_many'], got ['not_own_order', 'pay_alone_up_to_100']"
        in done.output
    )


def test_a_fact_the_rules_need_but_the_case_lacks_is_a_case_error(tmp_path: Path) -> None:
    tests = _write(
        tmp_path,
        """
  - name: no facts given
    tool: pay
    args: {order_id: o1, customer_id: c1, amount: 5.0}
    window: {pays_24h: 0}
    expect: {effect: allow}
  - name: no window given
    tool: pay
    args: {order_id: o1, customer_id: c1, amount: 5.0}
    facts: {order: {customer_id: c1}}
    expect: {effect: allow}
  - name: an undeclared tool
    tool: teleport
    expect: {effect: deny}
""",
    )
    done = _run(tests)
    assert done.exit_code == 1
    out = done.output
    assert "ERROR" in out
    assert "rule 'not_own_order' uses facts.order, which the case does not give" in out
    assert "rule 'too_many' uses window.pays_24h, which the case does not give" in out
    assert "tool 'teleport' is not declared" in out
    assert out.strip().splitlines()[-1] == "0 passed, 3 failed (3 could not be run)"


def test_a_rule_that_errors_fails_the_case_unless_expected(tmp_path: Path) -> None:
    tests = _write(
        tmp_path,
        """
  - name: fact without the field, expecting a plain deny
    tool: pay
    args: {order_id: o1, customer_id: c1, amount: 5.0}
    facts: {order: {id: o1}}
    window: {pays_24h: 0}
    expect: {effect: deny}
  - name: failing closed, on purpose
    tool: pay
    args: {order_id: o1, customer_id: c1, amount: 5.0}
    facts: {order: {id: o1}}
    window: {pays_24h: 0}
    expect: {effect: deny, rules: [not_own_order]}
""",
    )
    done = _run(tests)
    assert done.exit_code == 1
    assert "rule 'not_own_order' could not be evaluated" in done.output
    assert done.output.strip().splitlines()[-1] == "1 passed, 1 failed"


def test_json_and_junit_carry_each_case(tmp_path: Path) -> None:
    tests = _write(
        tmp_path,
        GOOD_CASE
        + """
  - name: wrong
    tool: pay
    tier: read_only
    args: {order_id: o1, customer_id: c1, amount: 5.0}
    facts: {order: {customer_id: c1}}
    window: {pays_24h: 0}
    expect: {effect: allow}
""",
    )
    junit = tmp_path / "out.xml"
    done = _run(tests, "--json", "--junit", junit)
    assert done.exit_code == 1
    report = json.loads(done.output)
    assert (report["passed"], report["failed"], report["errors"]) == (1, 1, 0)
    wrong = report["cases"][1]
    assert wrong["status"] == "failed" and wrong["got"]["effect"] == "deny"
    assert wrong["got"]["rules"] == ["default:tier"]
    assert (
        wrong["line"]
        == (tests / "pay_test.yaml").read_text().splitlines().index("  - name: wrong") + 1
    )
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    failures = suite.findall("testcase/failure")
    assert len(failures) == 1 and "expected allow, got deny" in (failures[0].get("message") or "")


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("spec: ../spec.yaml\ncases: [\n", "not valid YAML"),
        ("spec: ../nope.yaml\ncases:" + GOOD_CASE, "the spec '../nope.yaml' does not exist"),
        (
            "spec: ../spec.yaml\ncases:\n  - tool: pay\n    expect: {effect: maybe}\n",
            "expect.effect",
        ),
        ("spec: ../spec.yaml\n", "not a policy test file"),
    ],
)
def test_unusable_input_exits_2_with_a_readable_line(
    tmp_path: Path, fixture: str, message: str
) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "bad.yaml").write_text(fixture)
    done = _run(tests)
    assert done.exit_code == 2
    assert message in done.output
    assert str(tests / "bad.yaml") in done.output
    assert "Traceback" not in done.output


def test_a_spec_that_does_not_load_is_unusable_input(tmp_path: Path) -> None:
    tests = _write(tmp_path, GOOD_CASE, spec=SPEC.replace("tier: autonomous", "tier: yolo"))
    done = _run(tests)
    assert done.exit_code == 2
    assert "spec.yaml:5: tier: invalid value" in done.output


def test_a_directory_without_fixtures_is_unusable_input(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)  # a workflow spec is not taken for a fixture
    done = _run(tmp_path)
    assert done.exit_code == 2
    assert "holds no policy test files" in done.output
