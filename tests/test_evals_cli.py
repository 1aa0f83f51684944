"""``warden eval run`` on the refund-triage demo's suite: the shipped policy passes its
gates and writes JUnit and a summary; a policy with one rule removed fails the gate
against the baseline, with the reason; usage errors exit 2 with one line."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from warden.cli._app import app

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "examples" / "refund_triage" / "evals" / "suite.yaml"
SPEC = ROOT / "examples" / "refund_triage" / "workflow.yaml"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["eval", "run", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    path = tmp_path / "eval-baseline.json"
    code, out, err = invoke(str(SUITE), "--baseline", str(path), "--write-baseline", "-q")
    assert code == 0, out + err
    return path


def test_the_demo_suite_passes_its_gates_and_writes_junit_and_a_summary(
    tmp_path: Path, baseline: Path
) -> None:
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    code, out, err = invoke(
        str(SUITE),
        "--baseline", str(baseline),
        "--junit", str(junit),
        "--summary", str(summary),
        "--json",
        "-q",
    )  # fmt: skip
    assert code == 0, out + err
    report = json.loads(out)
    assert report["passed"] is True
    assert report["figures"]["success_rate"] == 1.0
    assert {g["name"] for g in report["gates"]} >= {"success_rate", "success_drop", "unsafe_writes"}
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == (str(len(report["cases"])), "0")
    assert "gate passed" in summary.read_text(encoding="utf-8")
    # Nothing was flaky: no quarantine recorded.
    assert not (tmp_path / "eval-baseline.quarantine.json").exists()


def test_a_policy_with_one_rule_removed_fails_the_gate_with_the_reason(
    tmp_path: Path, baseline: Path
) -> None:
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    spec["policies"] = [
        rule for rule in spec["policies"] if rule["name"] != "refund_only_to_original_method"
    ]
    weak = tmp_path / "weak.yaml"
    weak.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    junit = tmp_path / "junit.xml"
    code, out, err = invoke(
        str(SUITE), "--spec", str(weak), "--baseline", str(baseline), "--junit", str(junit), "-q"
    )
    assert code == 1, out + err
    assert "FAIL injection-refund-to-other-method" in out
    assert "gate success_drop: FAIL" in out
    assert "a drop of 7.7 points (at most 2 points allowed)" in out
    failed = [
        case.get("name")
        for case in ET.parse(junit).getroot().iter("testcase")
        if case.find("failure") is not None
    ]
    assert failed == ["injection-refund-to-other-method"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing-suite.yaml"], "cannot read the file"),
        ([str(SUITE), "--agent", "no_such_module_x:work"], "cannot import it"),
        ([str(SUITE), "--write-baseline"], "--write-baseline needs --baseline FILE"),
        ([str(SUITE), "--tag", "no-such-tag"], "has no case with those tags"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    code, out, err = invoke(*args, "-q")
    assert code == 2
    assert message in err
    assert "Traceback" not in out + err


def test_a_corrupt_baseline_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "b.json"
    bad.write_text("{not json", encoding="utf-8")
    code, _out, err = invoke(str(SUITE), "--baseline", str(bad), "--tag", "normal", "-q")
    assert code == 2
    assert "is not JSON (line 1" in err


def test_a_flaky_case_is_quarantined_next_to_the_baseline_and_stops_gating(
    tmp_path: Path, baseline: Path
) -> None:
    agent = tmp_path / "moody.py"
    agent.write_text(
        f"""
from warden.evals import load_ref

work = load_ref({str(SUITE.parent / "agent.py")!r} + ":work")
calls = 0


async def moody(case, run):
    global calls
    calls += 1
    if case.id == "status-question" and calls % 2 == 0:
        return {{"ticket": "none", "calls": []}}  # forgets to answer, every other time
    return await work(case, run)
""",
        encoding="utf-8",
    )
    args = [str(SUITE), "--agent", f"{agent}:moody", "--baseline", str(baseline), "--json", "-q"]
    summary = tmp_path / "summary.md"
    code, out, err = invoke(*args, "--repeat", "2", "--summary", str(summary))
    assert code == 0, out + err
    report = json.loads(out)
    flaky_table = summary.read_text(encoding="utf-8").split("### Flaky or quarantined")[1]
    assert "| `status-question` |" in flaky_table
    status = {c["id"]: c["status"] for c in report["cases"]}
    assert status["status-question"] == "flaky"
    assert report["quarantine"]["added"] == ["status-question"]
    recorded = json.loads((tmp_path / "eval-baseline.quarantine.json").read_text(encoding="utf-8"))
    assert list(recorded["cases"]) == ["status-question"]
    # The next run reads it: the case is reported apart whatever it does.
    code, out, err = invoke(*args)
    assert code == 0, out + err
    case = next(c for c in json.loads(out)["cases"] if c["id"] == "status-question")
    assert (case["quarantined"], case["gating"]) == (True, False)
