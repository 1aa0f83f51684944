"""τ²-retail as a suite of ``warden eval run`` (examples/tau2_retail/evals): the gold
conversations pass with their state diffs, the generated violations are denied by the
rule they break, a spec without a rule fails the gate on that rule's cases, and the
committed cases are what the generator writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from warden.cli._app import app

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the examples are not an installed package
    sys.path.insert(0, str(ROOT))

from examples.tau2_retail.data import load  # noqa: E402
from examples.tau2_retail.evals import build  # noqa: E402

EVALS = ROOT / "examples" / "tau2_retail" / "evals"
SUITE = EVALS / "suite.yaml"
SPEC = ROOT / "examples" / "tau2_retail" / "workflow.yaml"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["eval", "run", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_fast_subset_passes_its_gates_gold_and_violations(tmp_path: Path) -> None:
    quarantine = tmp_path / "q.json"
    code, out, err = invoke(
        str(SUITE), "--tag", "fast", "--quarantine", str(quarantine), "--json", "-q"
    )
    assert code == 0, out + err
    report = json.loads(out)
    assert report["passed"] is True
    cases = {c["id"]: c for c in report["cases"]}
    gold = [c for c in cases.values() if "gold" in c["tags"]]
    violations = [c for c in cases.values() if "violation" in c["tags"]]
    assert {c["id"] for c in gold} == {"gold-74", "gold-100", "gold-105"}
    assert len(violations) >= 19  # every rule has a case among the fast tasks
    assert all(c["status"] == "passed" for c in cases.values())
    # Every write of a gold conversation waited for the customer: held, then executed.
    assert all(t["unsafe_writes"] > 0 for c in gold for t in c["trials"])
    assert not quarantine.exists()


def test_a_spec_without_a_rule_fails_the_gate_on_that_rules_cases(tmp_path: Path) -> None:
    data = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    data["policies"] = [p for p in data["policies"] if p["name"] != "cancel_only_pending_orders"]
    weakened = tmp_path / "weakened.yaml"
    weakened.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    code, out, err = invoke(
        str(SUITE),
        "--spec", str(weakened),
        "--tag", "cancel_only_pending_orders",
        "--quarantine", str(tmp_path / "q.json"),
        "--json",
        "-q",
    )  # fmt: skip
    assert code == 1, out + err
    report = json.loads(out)
    failed = [c for c in report["cases"] if c["status"] == "failed"]
    assert failed and len(failed) == len(report["cases"])
    details = [f["detail"] for c in failed for f in c["trials"][0]["failures"]]
    assert any("cancel_only_pending_orders" in d for d in details)
    assert any(not g["passed"] and g["name"] == "success_rate" for g in report["gates"])


def test_the_committed_cases_are_what_the_generator_writes() -> None:
    committed = {
        c["id"]: c
        for c in map(json.loads, (EVALS / "cases.jsonl").read_text(encoding="utf-8").splitlines())
    }
    fresh = list(build.cases(load(task_ids=set(build.FAST_TASKS))))
    assert fresh
    for case in fresh:
        assert committed.get(case["id"]) == json.loads(json.dumps(case)), case["id"]


@pytest.mark.parametrize("bad", [{"users": {"nobody": {"name": "x"}}}, {"carts": {}}])
def test_a_case_patching_what_the_database_lacks_is_a_usage_error(
    tmp_path: Path, bad: dict[str, object]
) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(yaml.safe_dump([{"id": "bad", "fixtures": bad}]), encoding="utf-8")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "bad",
                "spec": str(SPEC),
                "environment": f"{EVALS / 'env.py'}:make_environment",
                "agent": f"{EVALS / 'agent.py'}:work",
                "identity": "retail-agent",
                "cases": [{"include": "cases.yaml"}],
            }
        ),
        encoding="utf-8",
    )
    code, _out, err = invoke(str(suite), "-q")
    assert code == 2
    assert "case 'bad'" in err and "reset" in err
