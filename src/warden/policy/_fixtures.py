"""Policy tests: YAML case files run through the compiled ``Policy`` (``warden policy test``).

A fixture file names a spec (relative to the file) and lists cases: a tool, its
arguments, and the values the gateway would otherwise look up or compute (facts, window
values, provenance, the principal, tenant and run context, a tier override), with the
decision expected. Each case is decided by the real ``Policy.decide`` through
``explain``: no store, no tool executed. docs/policies.md ("Testing policies") shows the
format.

Unusable input (a file that is not valid YAML or not a fixture, a spec that is missing
or does not load) raises ``SpecError`` with every issue located; a case that cannot be
decided as written (an undeclared tool, a fact a rule needs that the case does not give)
is a case error, reported with the others.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from warden.errors import SpecError, SpecIssue, UsageError
from warden.policy._context import model_context
from warden.policy._engine import Policy, ToolPolicy
from warden.policy._explain import CLEAN_PROVENANCE, Explanation, explain, tool_context_from_spec
from warden.spec import Effect, LoadedSpec, Tier, format_path, load_spec
from warden.spec._loader import parse_yaml

Status = Literal["passed", "failed", "error"]
PathKey = tuple[str | int, ...]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expect(_Model):
    effect: Effect
    #: the rules that produced the effect (``Decision.rules``; the safe default appears
    #: as ``default:tier`` or ``default:delete``), in any order
    rules: list[str] | None = None
    #: every rule whose condition held, in any order
    matched: list[str] | None = None


class CaseContext(_Model):
    """What a case (or a file's ``defaults``) may give instead of the gateway."""

    facts: dict[str, Any] | None = None
    window: dict[str, Any] | None = None
    principal: dict[str, Any] | None = None
    tenant: str | None = None
    run: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    tier: Tier | None = None


class Case(CaseContext):
    name: str | None = None
    tool: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    expect: Expect


class FixtureFile(_Model):
    spec: str = Field(min_length=1, description="the workflow spec, relative to this file")
    defaults: CaseContext = Field(default_factory=CaseContext)
    cases: list[Case] = Field(min_length=1)


@dataclass(frozen=True)
class CaseResult:
    file: str
    line: int | None
    name: str
    tool: str
    status: Status
    expect: Expect
    #: why the case failed or could not be run (None when it passed)
    message: str | None = None
    explanation: Explanation | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def to_json(self) -> dict[str, Any]:
        got = None
        if self.explanation is not None:
            d = self.explanation.decision
            got = {"effect": d.effect.value, "rules": list(d.rules), "matched": list(d.matched)}
        return {
            "file": self.file,
            "line": self.line,
            "name": self.name,
            "tool": self.tool,
            "status": self.status,
            "message": self.message,
            "expected": self.expect.model_dump(mode="json", exclude_none=True),
            "got": got,
            "rules": None
            if self.explanation is None
            else [r.to_json() for r in self.explanation.rules],
        }


@dataclass
class Report:
    files: list[str] = field(default_factory=list)
    results: list[CaseResult] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return all(r.status == "passed" for r in self.results)

    @property
    def summary(self) -> str:
        """``N passed, M failed``; failed counts the cases that errored, also named."""
        passed, errors = self.count("passed"), self.count("error")
        text = f"{passed} passed, {len(self.results) - passed} failed"
        return text + (f" ({errors} could not be run)" if errors else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "passed": self.count("passed"),
            "failed": self.count("failed") + self.count("error"),
            "errors": self.count("error"),
            "cases": [r.to_json() for r in self.results],
        }

    def to_junit(self) -> str:
        """JUnit XML: a test suite per fixture file, a test case per case."""
        root = ET.Element("testsuites", name="warden policy test")
        by_file: dict[str, list[CaseResult]] = {f: [] for f in self.files}
        for result in self.results:
            by_file.setdefault(result.file, []).append(result)
        totals = {"tests": 0, "failures": 0, "errors": 0}
        for file, results in by_file.items():
            counts = {
                "tests": len(results),
                "failures": sum(1 for r in results if r.status == "failed"),
                "errors": sum(1 for r in results if r.status == "error"),
            }
            for key, n in counts.items():
                totals[key] += n
            suite = ET.SubElement(
                root, "testsuite", {"name": file, **{k: str(v) for k, v in counts.items()}}
            )
            for r in results:
                case = ET.SubElement(
                    suite,
                    "testcase",
                    classname=Path(file).stem,
                    name=r.name,
                    file=file,
                    line=str(r.line or 0),
                )
                if r.status != "passed":
                    tag = "failure" if r.status == "failed" else "error"
                    ET.SubElement(
                        case, tag, message=r.message or ""
                    ).text = f"{r.where}: {r.message}"
        root.attrib.update({k: str(v) for k, v in totals.items()})
        ET.indent(root)
        return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def fixture_files(target: Path) -> list[Path]:
    """``target`` itself, or every ``*.yaml``/``*.yml`` under it (sorted) except workflow
    specs, so that a spec may sit next to its tests."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise UsageError(f"{target}: no such file or directory")
    found = [
        p
        for p in sorted(target.rglob("*"))
        if p.suffix in (".yaml", ".yml") and p.is_file() and not _is_workflow_spec(p)
    ]
    if not found:
        raise UsageError(f"{target} holds no policy test files (*.yaml, *.yml)")
    return found


def _is_workflow_spec(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # reported when it is loaded as a fixture
    return isinstance(data, dict) and "cases" not in data and "policies" in data


def _line(lines: dict[PathKey, int], path: PathKey) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def load_fixture(path: Path) -> tuple[FixtureFile, dict[PathKey, int]]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(
            [SpecIssue(file, None, "", f"cannot read the file: {exc.strerror}")]
        ) from exc
    data, lines = parse_yaml(text, file)
    if not isinstance(data, dict) or "cases" not in data:
        what = "a workflow spec, " if isinstance(data, dict) and "policies" in data else ""
        raise SpecError(
            [
                SpecIssue(
                    file,
                    1,
                    "",
                    f"{what}not a policy test file: one is a mapping with 'spec' (the "
                    "workflow spec, relative to the file) and 'cases'",
                )
            ]
        )
    try:
        return FixtureFile.model_validate(data), lines
    except ValidationError as exc:
        issues = []
        for e in exc.errors(include_url=False):
            loc: PathKey = tuple(e["loc"])
            issues.append(SpecIssue(file, _line(lines, loc), format_path(loc), e["msg"]))
        raise SpecError(issues) from None


class _Specs:
    """Specs and their compiled policies, loaded once however many files name them."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[LoadedSpec, Policy]] = {}

    def get(
        self, fixture: Path, relative: str, lines: dict[PathKey, int]
    ) -> tuple[LoadedSpec, Policy]:
        path = (fixture.parent / relative).resolve()
        if path not in self._cache:
            if not path.is_file():
                raise SpecError(
                    [
                        SpecIssue(
                            str(fixture),
                            _line(lines, ("spec",)),
                            "spec",
                            f"the spec {relative!r} does not exist (looked for {path})",
                        )
                    ]
                )
            loaded = load_spec(path)
            self._cache[path] = (loaded, Policy(loaded))
        return self._cache[path]


def run_fixtures(paths: Sequence[Path]) -> Report:
    """Run every case of every file; ``SpecError`` on the first unusable file."""
    specs = _Specs()
    report = Report()
    for path in paths:
        fixture, lines = load_fixture(path)
        loaded, policy = specs.get(path, fixture.spec, lines)
        report.files.append(str(path))
        for i, case in enumerate(fixture.cases):
            line = _line(lines, ("cases", i))
            report.results.append(
                run_case(str(path), line, i, case, fixture.defaults, loaded, policy)
            )
    return report


def _merged(default: dict[str, Any] | None, given: dict[str, Any] | None) -> dict[str, Any] | None:
    if default is None and given is None:
        return None
    return {**(default or {}), **(given or {})}


def _needed(
    kind: str,
    used: frozenset[str],
    given: dict[str, Any] | None,
    tool_policy: ToolPolicy,
    declared: Iterable[str],
    key: str,
) -> str | None:
    """Why the case cannot be decided as written, for its facts or window values."""
    given = given or {}
    undeclared = sorted(set(given) - set(declared))
    if undeclared:
        return (
            f"{key}.{undeclared[0]} is not a {kind} the spec declares "
            f"(declared: {', '.join(sorted(declared)) or 'none'})"
        )
    missing = sorted(used - set(given))
    if not missing:
        return None
    name = missing[0]
    users = [
        r.name for r in tool_policy.rules if name in (r.facts if kind == "fact" else r.windows)
    ]
    # Used by a rule, or through a variable, a chained fact or a window's group.
    who = f"rule {users[0]!r}" if users else "a variable, chained fact or window of its rules"
    return (
        f"{who} use{'s' if users else ''} {key}.{name}, which the case does not give: "
        f"add it under '{key}:' (the gateway would {'look it up' if kind == 'fact' else 'compute it'})"
    )


def run_case(
    file: str,
    line: int | None,
    index: int,
    case: Case,
    defaults: CaseContext,
    loaded: LoadedSpec,
    policy: Policy,
) -> CaseResult:
    name = case.name or f"case {index + 1} ({case.tool})"

    def result(
        status: Status, message: str | None = None, exp: Explanation | None = None
    ) -> CaseResult:
        return CaseResult(file, line, name, case.tool, status, case.expect, message, exp)

    spec = loaded.spec
    try:
        tool_context, effect_class = tool_context_from_spec(loaded, case.tool)
    except UsageError as exc:
        return result("error", str(exc))
    tool_policy = policy.for_tool(case.tool)
    facts = _merged(defaults.facts, case.facts)
    window = _merged(defaults.window, case.window)
    for kind, used, given, declared, key in (
        ("fact", tool_policy.facts, facts, spec.facts, "facts"),
        ("window", tool_policy.windows, window, spec.windows, "window"),
    ):
        problem = _needed(kind, used, given, tool_policy, declared, key)
        if problem is not None:
            return result("error", problem)
    tier = case.tier or defaults.tier or spec.tier
    if len(spec.agents) == 1:
        ((agent, declared_agent),) = spec.agents.items()
        principal: dict[str, Any] = {
            "agent": agent,
            "scopes": sorted(declared_agent.scopes),
            "key": None,
        }
    else:
        principal = {"agent": "policy-test", "scopes": [], "key": None}
    run = {
        "id": "run_policy_test",
        "step": 1,
        "tier": tier.value,
        "task_type": None,
        "end_user": None,
        "opened_by": None,
        "risk": 0.0,
        "counts": {case.tool: 1},
        "cost_usd": 0.0,
        "tokens": 0,
    }
    activation = {
        "tool": tool_context,
        "model": model_context(loaded.spec.models, case.tool),
        "args": case.args,
        "principal": _merged(principal, _merged(defaults.principal, case.principal)),
        "tenant": case.tenant or defaults.tenant or "policy-test",
        "run": _merged(run, _merged(defaults.run, case.run)),
        "provenance": _merged(CLEAN_PROVENANCE, _merged(defaults.provenance, case.provenance)),
        "window": window or {},
        "now": datetime.now(UTC),
        "facts": facts or {},
    }
    explanation = explain(policy, case.tool, effect_class, tier, activation)
    decision = explanation.decision
    problems = []
    if decision.effect is not case.expect.effect:
        problems.append(
            f"expected {case.expect.effect.value}, got {decision.effect.value}"
            f" by {', '.join(decision.rules) or 'no rule'}"
        )
    for what, expected, got in (
        ("rules", case.expect.rules, decision.rules),
        ("matched", case.expect.matched, decision.matched),
    ):
        if expected is not None and sorted(expected) != sorted(got):
            problems.append(f"expected {what} {sorted(expected)}, got {sorted(got)}")
    errored = explanation.errors
    if errored and case.expect.rules is None:
        first = errored[0]
        problems.append(
            f"rule {first.name!r} could not be evaluated ({first.error}): give the values it "
            f"reads, or expect rules: [{', '.join(r.name for r in errored)}] to test failing closed"
        )
    if problems:
        problems.append(f"matched: {', '.join(decision.matched) or 'none'}")
        return result("failed", "; ".join(problems), explanation)
    return result("passed", None, explanation)
