"""Loading a workflow spec from YAML, with every error located by file, line and field path."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from warden.errors import SpecError, SpecIssue
from warden.ledger._canonical import canonical_json
from warden.spec import _economics, _models
from warden.spec._base import _Model
from warden.spec._models import PiiSpec, WorkflowSpec

PathKey = tuple[str | int, ...]
# A marker path element: ``(*path, _CONTENT)`` holds the first line of a scalar's text.
_CONTENT = "\x00content"


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec, where it came from, and where each of its fields is written."""

    spec: WorkflowSpec
    file: str
    fingerprint: str
    lines: dict[PathKey, int] = field(repr=False, compare=False)

    def line_of(self, path: PathKey) -> int | None:
        """The line of ``path``, or of its nearest written ancestor."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def content_line_of(self, path: PathKey) -> int | None:
        """The line where the text of the scalar at ``path`` starts (for CEL error lines)."""
        return content_line(self.lines, path)

    def issue(self, path: PathKey, message: str, **kw: Any) -> SpecIssue:
        return SpecIssue(self.file, self.line_of(path), format_path(path), message, **kw)


def content_line(lines: dict[PathKey, int], path: PathKey) -> int | None:
    """The line where the text of the scalar at ``path`` starts."""
    return lines.get((*path, _CONTENT)) or _line_of(lines, path)


def format_path(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def fingerprint(spec: WorkflowSpec) -> str:
    """Content hash of the normalized spec: formatting and key order do not change it.

    Keys added to the spec later are left out while they hold their defaults, so a spec
    that does not use them keeps the fingerprint it had.
    """
    data = spec.model_dump(mode="json")
    if not data["variables"]:
        del data["variables"]
    if data["risk"] == {"review_at": None}:
        del data["risk"]
    for rule in data["policies"]:
        if rule["mode"] == "enforce":
            del rule["mode"]
    for window in data["windows"].values():
        if window["tools"] is None:
            del window["tools"]
    for tool in data["tools"].values():
        if tool["cost"] is None:
            del tool["cost"]
    if "gates" not in spec.model_fields_set:
        del data["gates"]
    for key in ("models", "budgets", "routes"):
        if not data[key]:
            del data[key]
    if spec.pii == PiiSpec():
        del data["pii"]
    if not data["alerts"]:
        del data["alerts"]
    if data.get("roi") is None:  # added with the console's ROI panel
        data.pop("roi", None)
    for key in ("p50_latency_ms", "policy_violation_rate_max"):  # added with live SLOs
        if data["slo"].get(key) is None:
            data["slo"].pop(key, None)
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def _construct(
    node: yaml.Node, path: PathKey, lines: dict[PathKey, int], file: str, loader: yaml.SafeLoader
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise SpecError(
                    [
                        SpecIssue(
                            file,
                            key_node.start_mark.line + 1,
                            format_path(path),
                            "mapping keys must be plain scalars",
                        )
                    ]
                )
            if isinstance(key, bool | float):
                key = str(key).lower() if isinstance(key, bool) else str(key)
            if key in out:
                raise SpecError(
                    [
                        SpecIssue(
                            file,
                            key_node.start_mark.line + 1,
                            format_path((*path, key)),
                            "duplicate key",
                        )
                    ]
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, (*path, key), lines, file, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(child, (*path, i), lines, file, loader) for i, child in enumerate(node.value)
        ]
    # Where the scalar's text begins: a block scalar (| or >) starts on the next line.
    block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
    lines[(*path, _CONTENT)] = node.start_mark.line + 1 + (1 if block else 0)
    return loader.construct_object(node)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_yaml(text: str, file: str) -> tuple[Any, dict[PathKey, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise SpecError([SpecIssue(file, line, "", f"not valid YAML: {exc.problem}")]) from exc
    lines: dict[PathKey, int] = {}
    if node is None:
        raise SpecError([SpecIssue(file, 1, "", "the file is empty", expected="a mapping")])
    # Scalars are built by PyYAML's own safe constructor; only the tree walk is ours,
    # so that every path keeps the line it was written on.
    loader = yaml.SafeLoader("")
    return _construct(node, (), lines, file, loader), lines


def load_spec_text(text: str, file: str = "<string>") -> LoadedSpec:
    data, lines = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise SpecError(
            [
                SpecIssue(
                    file,
                    1,
                    "",
                    "a workflow spec is a mapping",
                    expected="mapping",
                    found=type(data).__name__,
                )
            ]
        )
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            loc: PathKey = tuple(err["loc"])
            expected, found = _expected_found(err)
            issues.append(
                SpecIssue(
                    file,
                    _line_of(lines, loc),
                    format_path(loc),
                    _message(err),
                    expected=expected,
                    found=found,
                )
            )
        issues.sort(key=lambda i: i.line or 0)
        raise SpecError(issues) from None
    loaded = LoadedSpec(spec, file, fingerprint(spec), lines)
    issues = check_references(loaded)
    if issues:
        raise SpecError(issues)
    return loaded


def load_spec(path: str | Path) -> LoadedSpec:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(
            [SpecIssue(file, None, "", f"cannot read the file: {exc.strerror}")]
        ) from exc
    return load_spec_text(text, file)


def _line_of(lines: dict[PathKey, int], loc: PathKey) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _all_field_names() -> set[str]:
    names: set[str] = set()
    for model in [*_models.__dict__.values(), *_economics.__dict__.values()]:
        if isinstance(model, type) and issubclass(model, _Model):
            names.update(f.alias or n for n, f in model.model_fields.items())
    return names


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, _all_field_names(), n=1)
        return f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        msg: str = err["msg"]
        return msg.removeprefix("Value error, ")
    return "invalid value"


def _expected_found(err: Any) -> tuple[str | None, str | None]:
    kind = err["type"]
    if kind == "extra_forbidden":
        return None, None
    if kind == "missing":
        return "a value", "nothing"
    if kind == "value_error":
        return None, _describe(err.get("input"))
    expected: str = err["msg"]
    expected = expected.removeprefix("Input should be ").removeprefix("input should be ")
    return expected, _describe(err.get("input"))


def check_references(loaded: LoadedSpec) -> list[SpecIssue]:
    """Cross-field checks: every tool named anywhere must be declared under ``tools``."""
    spec = loaded.spec
    declared = set(spec.tools)
    issues: list[SpecIssue] = []

    def need_tool(name: str, path: PathKey) -> None:
        if name not in declared:
            issues.append(
                loaded.issue(
                    path,
                    "names a tool that is not declared under 'tools'",
                    expected=f"one of {sorted(declared)}" if declared else "a declared tool",
                    found=repr(name),
                )
            )

    for name, fact in spec.facts.items():
        need_tool(fact.tool, ("facts", name, "tool"))
        if fact.tool in spec.tools and (spec.tools[fact.tool].effect or "read") != "read":
            issues.append(loaded.issue(("facts", name, "tool"), "a fact must use a read tool"))
    for name, window in spec.windows.items():
        if window.tool is not None:
            need_tool(window.tool, ("windows", name, "tool"))
        for j, tool_name in enumerate(window.tools or ()):
            need_tool(tool_name, ("windows", name, "tools", j))
    for i, task in enumerate(spec.task_types):
        for j, tool_name in enumerate(task.allowed_tools):
            need_tool(tool_name, ("task_types", i, "allowed_tools", j))
    seen: dict[str, int] = {}
    for i, rule in enumerate(spec.policies):
        for j, tool_name in enumerate(rule.tools or []):
            need_tool(tool_name, ("policies", i, "tools", j))
        if rule.name in seen:
            issues.append(
                loaded.issue(
                    ("policies", i, "name"),
                    f"duplicate rule name (also policies[{seen[rule.name]}])",
                )
            )
        seen.setdefault(rule.name, i)
        if rule.effect == "score" and rule.mode == "shadow":
            issues.append(
                loaded.issue(
                    ("policies", i, "mode"),
                    "a score rule decides nothing, so it cannot be a shadow rule",
                    expected="mode: enforce (or another effect)",
                    found="mode: shadow",
                )
            )
        for key in ("approvers", "sla"):
            if getattr(rule, key) is not None and rule.effect not in (
                "require_approval",
                "escalate",
            ):
                issues.append(
                    loaded.issue(
                        ("policies", i, key),
                        f"'{key}' applies only to require_approval or escalate rules",
                    )
                )
        classes = spec.escalation.sla_classes
        if rule.sla is not None and rule.sla not in classes:
            issues.append(
                loaded.issue(
                    ("policies", i, "sla"),
                    "names an SLA class that is not declared under 'escalation.sla_classes'",
                    expected=f"one of {sorted(classes)}" if classes else "a declared SLA class",
                    found=repr(rule.sla),
                )
            )
    issues += _check_economics(loaded)
    return issues


#: What a route's ``when`` may read.
ROUTE_ROOTS = frozenset({"run", "args", "hints", "tenant", "principal"})


def _check_economics(loaded: LoadedSpec) -> list[SpecIssue]:
    """Budgets name declared models and distinct names; every model can be priced."""
    spec = loaded.spec
    issues: list[SpecIssue] = []
    seen: dict[str, int] = {}
    for i, budget in enumerate(spec.budgets):
        if budget.name in seen:
            issues.append(
                loaded.issue(
                    ("budgets", i, "name"),
                    f"duplicate budget name (also budgets[{seen[budget.name]}])",
                )
            )
        seen.setdefault(budget.name, i)
        route = budget.route_model
        if route is not None and route not in spec.models:
            issues.append(
                loaded.issue(
                    ("budgets", i, "on_exhausted"),
                    "routes to a model that is not declared under 'models'",
                    expected=f"one of {sorted(spec.models)}" if spec.models else "a declared model",
                    found=repr(route),
                )
            )
    def need_model(name: str, path: PathKey) -> None:
        if name not in spec.models:
            issues.append(
                loaded.issue(
                    path,
                    "names a model that is not declared under 'models'",
                    expected=f"one of {sorted(spec.models)}" if spec.models else "a declared model",
                    found=repr(name),
                )
            )

    for name, model in spec.models.items():
        for j, other in enumerate(model.fallback):
            need_model(other, ("models", name, "fallback", j))
        if model.escalate_to is not None:
            need_model(model.escalate_to, ("models", name, "escalate_to"))
    if spec.routes:
        from warden.errors import CelCompileError, CelSyntaxError
        from warden.policy.cel import compile_expression

        for route, rules in spec.routes.items():
            if route in spec.models:
                issues.append(
                    loaded.issue(("routes", route), f"{route!r} is already a model's name")
                )
            for j, rule in enumerate(rules):
                need_model(rule.model, ("routes", route, j, "model"))
                if rule.when is None:
                    continue
                try:
                    compile_expression(rule.when, roots=ROUTE_ROOTS)
                except (CelSyntaxError, CelCompileError) as exc:
                    issues.append(loaded.issue(("routes", route, j, "when"), f"CEL: {exc}"))
    if spec.models:
        # Imported here: the price data is loaded only by specs that declare models.
        from warden.economics._pricing import UnknownModelError, pricing_for

        for name, model in spec.models.items():
            try:
                pricing_for(model.pricing_provider, model.model, model.price)
            except UnknownModelError as exc:
                issues.append(loaded.issue(("models", name, "model"), str(exc)))
    return issues
