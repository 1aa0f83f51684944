"""A suite run for CI: JSON, JUnit XML (one test case per scenario; quarantined and
flaky ones skipped with the reason) and a Markdown summary (for ``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warden.evals._calibration import Calibration
from warden.evals._gate import Check, Figures, pass_at_k, pass_hat_k
from warden.evals._runner import CaseResult


@dataclass(frozen=True)
class Report:
    suite: str
    workflow: str
    spec_fingerprint: str
    figures: Figures
    checks: list[Check]
    results: list[CaseResult]
    quarantine_file: str
    quarantine_added: list[str]
    quarantine_released: list[str]
    #: the agent's reported confidence per action against what Warden let run (None when
    #: no action carried one)
    calibration: Calibration | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [c.detail for c in self.checks if not c.passed]


def _case_json(r: CaseResult) -> dict[str, Any]:
    return {
        "id": r.case.id,
        "tags": r.case.tags,
        "status": r.status,
        "quarantined": r.quarantined,
        "gating": r.gating,
        "passes": r.passes,
        "pass_hat_k": pass_hat_k(len(r.trials), r.passes, r.repeat),
        "pass_at_k": pass_at_k(len(r.trials), r.passes, r.repeat),
        "trials": [
            {
                "run_id": t.trial.run_id,
                "passed": t.passed,
                "confirmation": t.trial.confirmation,
                "latency_ms": round(t.trial.latency_ms, 3),
                "cost_usd": str(t.trial.cost_usd),
                "unsafe_writes": t.trial.unsafe_writes,
                "failures": [{"scorer": s.name, "detail": s.detail} for s in t.failures],
            }
            for t in r.trials
        ],
    }


def to_json(report: Report) -> dict[str, Any]:
    return {
        "suite": report.suite,
        "workflow": report.workflow,
        "spec_fingerprint": report.spec_fingerprint,
        "passed": report.passed,
        "reasons": report.reasons,
        "gates": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in report.checks],
        "figures": report.figures.to_json(),
        "quarantine": {
            "file": report.quarantine_file,
            "added": report.quarantine_added,
            "released": report.quarantine_released,
        },
        "cases": [_case_json(r) for r in report.results],
        "calibration": None if report.calibration is None else report.calibration.to_json(),
    }


def _first_failure(r: CaseResult) -> str:
    for t in r.trials:
        if t.failures:
            return "; ".join(f"{s.name}: {s.detail}" for s in t.failures)
    return ""


def write_junit(report: Report, path: Path) -> None:
    results = report.results
    failures = sum(r.gating and r.status == "failed" for r in results)
    skipped = sum(not r.gating for r in results)
    time = sum(t.trial.latency_ms for r in results for t in r.trials) / 1000
    suite = ET.Element(
        "testsuite",
        name=report.suite,
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{time:.3f}",
    )
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"warden.eval.{report.suite}",
            name=r.case.id,
            time=f"{sum(t.trial.latency_ms for t in r.trials) / 1000:.3f}",
        )
        if r.quarantined:
            ET.SubElement(case, "skipped", message=f"quarantined ({r.status})")
        elif r.status == "flaky":
            ET.SubElement(
                case,
                "skipped",
                message=f"flaky: {r.passes} of {len(r.trials)} trials passed; quarantined",
            )
        elif r.status == "failed":
            detail = _first_failure(r)
            failure = ET.SubElement(case, "failure", message=detail[:500])
            failure.text = detail
    ET.SubElement(suite, "system-out").text = "\n".join(
        ["gates:", *(f"{'PASS' if c.passed else 'FAIL'} {c.detail}" for c in report.checks)]
    )
    root = ET.Element("testsuites")
    root.append(suite)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: Report) -> str:
    f = report.figures
    verdict = "passed" if report.passed else "**FAILED**"
    lines = [
        f"## Warden eval: {report.suite} — gate {verdict}",
        "",
        f"Workflow `{report.workflow}`, spec `{report.spec_fingerprint[:12]}`; "
        f"{f.cases} cases, {f.repeat} trial(s) each.",
        "",
        "| gate | result | detail |",
        "| --- | --- | --- |",
        *(
            f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {_md(c.detail)} |"
            for c in report.checks
        ),
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| success rate (gating cases) | {_rate(f.success_rate)} ({f.passed} of {f.gating}) |",
        f"| pass^{f.repeat} / pass@{f.repeat} | {_rate(f.pass_hat_k)} / {_rate(f.pass_at_k)} |",
        f"| unsafe-write attempts | {f.unsafe_writes:g} |",
        f"| cost per successful case | {_usd(f.cost_per_success_usd)} |",
        f"| p95 latency | {'—' if f.p95_latency_ms is None else f'{f.p95_latency_ms:.0f} ms'} |",
        f"| flaky (quarantined now) / quarantined before | {f.flaky} / {f.quarantined} |",
    ]
    cal = report.calibration
    if cal is not None:
        lines += [
            "",
            f"### Calibration: ECE {cal.ece:.3f} over {cal.actions} actions",
            "",
            "| confidence | actions | mean confidence | executed by itself |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {b.low:.1f}-{b.high:.1f} | {b.count} | {_rate(b.mean_confidence)} "
            f"| {_rate(b.accuracy)} |"
            for b in cal.bins
            if b.count
        ]
    failed = [r for r in report.results if r.gating and r.status == "failed"]
    if failed:
        lines += ["", "### Failed cases", "", "| case | why |", "| --- | --- |"]
        lines += [f"| `{r.case.id}` | {_md(_first_failure(r))[:300]} |" for r in failed]
    apart = [r for r in report.results if not r.gating]
    if apart:
        k = f.repeat
        lines += ["", "### Flaky or quarantined (not gating)", ""]
        lines += [f"| case | trials passed | pass^{k} | pass@{k} |", "| --- | --- | --- | --- |"]
        lines += [
            f"| `{r.case.id}` | {r.passes} of {len(r.trials)} "
            f"| {_rate(pass_hat_k(len(r.trials), r.passes, k))} "
            f"| {_rate(pass_at_k(len(r.trials), r.passes, k))} |"
            for r in apart
        ]
    return "\n".join(lines) + "\n"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _usd(value: Any) -> str:
    return "—" if value is None else f"${value:.6f}"
