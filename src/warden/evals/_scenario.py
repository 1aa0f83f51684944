"""The scenario bank: suites and cases as typed models, loaded from YAML or JSONL with
every error located by file, line and field path (as workflow specs are).

A suite file names the workflow spec, the environment, the agent under test and its
cases (inline, or included from YAML and JSONL files, one case per entry). A case holds
its input, the fixtures the environment starts from, and what must hold afterwards.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from warden.errors import SpecError, SpecIssue
from warden.spec._loader import PathKey, format_path, parse_yaml

CaseId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$", max_length=200)]
#: a reference to a Python callable: ``package.module:function`` or ``file.py:function``
Ref = Annotated[str, Field(pattern=r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallMatch(_Model):
    """A tool call: the tool, and argument values it must have (others may differ)."""

    tool: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)


def _call(value: Any) -> Any:
    return {"tool": value} if isinstance(value, str) else value


class DecisionExpect(_Model):
    """A policy decision the run must contain: this call denied by that rule, that call
    sent for approval. ``effect`` is the decision; ``rule`` one of the rules it names."""

    tool: str = Field(min_length=1)
    effect: Literal["allow", "deny", "require_approval", "escalate"]
    rule: str | None = None
    #: the refusal's kind when the call was stopped before the policy (``scope_denied``,
    #: ``unknown_tool``, ``runaway``, ...) or by it (``policy_block``)
    kind: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    #: exactly this many matching decisions (none: at least one)
    count: int | None = Field(None, ge=0)


class CollectionChanges(_Model):
    """What must have changed in one collection (table) of the environment's state."""

    #: objects added: each entry's fields must match one added object (a distinct one)
    inserted: list[dict[str, Any]] = Field(default_factory=list)
    #: objects changed, by id: the fields listed must hold these values afterwards
    updated: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: ids of objects removed
    deleted: list[str] = Field(default_factory=list)


class StateExpect(_Model):
    """State assertions: the changes expected, and (``only``) nothing else changed."""

    changes: dict[str, CollectionChanges] = Field(default_factory=dict)
    #: no other object added, removed or changed, and no other field of an updated one
    only: bool = True


class Expectations(_Model):
    state: StateExpect | None = None
    decisions: list[DecisionExpect] = Field(default_factory=list)
    #: calls that must have been executed (a tool name, or ``{tool, args}``)
    required_calls: list[CallMatch] = Field(default_factory=list)
    #: calls that must never have been executed (attempts that Warden refused are fine:
    #: they are counted as unsafe-write attempts instead)
    forbidden: list[CallMatch] = Field(default_factory=list)
    #: every call the agent made had valid arguments (no ``schema_error``)
    valid_calls: bool = True
    #: a JSON Schema the agent's return value must satisfy
    output_schema: dict[str, Any] | None = None
    #: the run's ``success_when`` verdict (recorded on ``run_finished``) must be this
    success: bool | None = None
    max_cost_usd: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] | None = None
    max_latency_ms: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _names_are_calls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("required_calls", "forbidden"):
                if isinstance(data.get(key), list):
                    data[key] = [_call(v) for v in data[key]]
        return data


class Case(_Model):
    """One scenario: what the agent is given, the state it starts from, what must hold."""

    id: CaseId
    description: str | None = None
    task_type: str | None = None
    #: what the agent under test is given (any JSON value)
    input: Any = None
    #: the initial state of the systems the tools touch, in the environment's terms
    #: (for ``SQLiteEnvironment``: table -> rows), added to the suite's fixtures
    fixtures: dict[str, Any] = Field(default_factory=dict)
    expect: Expectations = Field(default_factory=lambda: Expectations())
    tags: list[str] = Field(default_factory=list)


class Include(_Model):
    include: str = Field(min_length=1)


class SuiteFile(_Model):
    name: str = Field(min_length=1)
    description: str | None = None
    #: the workflow spec, relative to the suite file
    spec: str = Field(min_length=1)
    #: ``MOD:FUNC`` returning the ``Environment`` (``file.py:func`` relative to the suite)
    environment: Ref | None = None
    #: the default agent under test (``--agent`` overrides it)
    agent: Ref | None = None
    #: the spec's agent identity the runs are opened as (default: its first agent)
    identity: str | None = None
    tenant: str = "eval"
    #: fixtures every case starts from (a case's own are added to them)
    fixtures: dict[str, Any] = Field(default_factory=dict)
    #: custom scorers: ``MOD:FUNC`` taking (case, trial) and returning a ``Score``
    scorers: list[Ref] = Field(default_factory=list)
    #: cases inline, or ``{include: FILE}`` (YAML or JSONL, relative to the suite)
    cases: list[dict[str, Any]] = Field(default_factory=list)


class Suite(BaseModel):
    """A loaded suite: its settings, every case, and where things are."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    file: SuiteFile
    path: Path
    cases: list[Case]

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def directory(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        return (self.directory / relative).resolve()


# -- loading ---------------------------------------------------------------------------


def _issues(exc: ValidationError, file: str, line_of: Any, prefix: PathKey = ()) -> list[SpecIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc: PathKey = (*prefix, *err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"unknown key {str(err['loc'][-1])!r}"
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        found = None if kind in ("extra_forbidden", "missing") else repr(err.get("input"))[:60]
        issues.append(SpecIssue(file, line_of(loc), format_path(loc), message, found=found))
    return issues


def _line_finder(lines: dict[PathKey, int]) -> Any:
    def line_of(loc: PathKey) -> int | None:
        while loc:
            if loc in lines:
                return lines[loc]
            loc = loc[:-1]
        return lines.get(())

    return line_of


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(
            [SpecIssue(str(path), None, "", f"cannot read the file: {exc.strerror}")]
        ) from exc
    except UnicodeDecodeError as exc:
        raise SpecError(
            [SpecIssue(str(path), None, "", f"not UTF-8 text (byte {exc.start})")]
        ) from exc


def load_cases(path: str | Path) -> list[Case]:
    """The cases of a YAML file (a list, or a mapping with ``cases:``) or a JSONL file
    (one case per line); ``SpecError`` with every problem located."""
    path = Path(path)
    file = str(path)
    text = _read(path)
    issues: list[SpecIssue] = []
    cases: list[Case] = []
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                issues.append(SpecIssue(file, number, "", f"not valid JSON: {exc.msg}"))
                continue
            try:
                cases.append(Case.model_validate(data))
            except ValidationError as exc:
                issues += _issues(exc, file, lambda _loc, n=number: n)
    else:
        data, lines = parse_yaml(text, file)
        prefix: PathKey = ()
        if isinstance(data, dict) and "cases" in data:
            data, prefix = data["cases"], ("cases",)
        if not isinstance(data, list):
            raise SpecError([SpecIssue(file, 1, "", "a case file holds a list of cases")])
        line_of = _line_finder(lines)
        for i, entry in enumerate(data):
            try:
                cases.append(Case.model_validate(entry))
            except ValidationError as exc:
                issues += _issues(exc, file, line_of, (*prefix, i))
    if issues:
        raise SpecError(issues)
    return cases


def load_suite(path: str | Path) -> Suite:
    """A suite file and every case it holds or includes; case ids must be unique."""
    path = Path(path)
    file = str(path)
    data, lines = parse_yaml(_read(path), file)
    if not isinstance(data, dict):
        raise SpecError([SpecIssue(file, 1, "", "a suite file is a mapping")])
    line_of = _line_finder(lines)
    try:
        suite = SuiteFile.model_validate(data)
    except ValidationError as exc:
        issues = _issues(exc, file, line_of)
        issues.sort(key=lambda i: i.line or 0)
        raise SpecError(issues) from None
    cases: list[Case] = []
    where: dict[str, str] = {}
    issues = []
    for i, raw in enumerate(suite.cases):
        if "include" in raw:
            try:
                entry = Include.model_validate(raw)
            except ValidationError as exc:
                issues += _issues(exc, file, line_of, ("cases", i))
                continue
            included = path.parent / entry.include
            if not included.exists():
                issues.append(
                    SpecIssue(
                        file, line_of(("cases", i)), f"cases[{i}].include", f"no file {included}"
                    )
                )
                continue
            found, origin = load_cases(included), str(included)
        else:
            try:
                found = [Case.model_validate(raw)]
            except ValidationError as exc:
                issues += _issues(exc, file, line_of, ("cases", i))
                continue
            origin = f"{file}:{line_of(('cases', i))}"
        for case in found:
            if case.id in where:
                issues.append(
                    SpecIssue(
                        origin, None, "id", f"duplicate case id {case.id!r} (also {where[case.id]})"
                    )
                )
            where.setdefault(case.id, origin)
            cases.append(case)
    if issues:
        raise SpecError(issues)
    return Suite(file=suite, path=path.resolve(), cases=cases)
