"""Load-time type checking of a policy against the tools it governs.

A rule that reads a field no tool has (``args.rol``), compares a count with a string
(``window.x >= "5"``) or reads a context field that does not exist (``run.end_user``)
compiles, and then fails closed on every call it applies to; a window grouped by a
parameter its tool does not take never counts anything (it fails open). ``check_policy``
finds these when the spec is loaded, every one in one pass, each with its line.

What each rule sees:

- ``args``: the input schema of the tools the rule can apply to. A rule pinned to tools
  (``tools: [x]``, or ``tool.name == "x"`` / ``tool.name in [...]`` in a top-level ``&&``,
  and likewise on either side of any ``&&``) sees theirs; others see the union over every
  declared tool: a field is fine if any of them has it. ``schema: any`` tools and map-typed
  parts are not checked.
- ``facts.<name>``: the fact tool's output schema, when it declares one;
  ``window.<name>``: int for ``count``, double for ``sum``;
- everything else: the table in ``warden.policy._context``.

Only what is certain is reported: a type the checker does not know (``dyn``) agrees with
everything, and a union agrees when any of its members does. Undeclared facts, windows,
tools and CEL syntax are reported by ``Policy`` and the spec loader, not again here.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from warden.errors import CelCompileError, CelSyntaxError, SpecError, SpecIssue
from warden.policy._context import CONTEXT_VALUES
from warden.policy._engine import CONTEXT_ROOTS, FACT_ARG_ROOTS, Policy, schema_params
from warden.policy._types import (
    BOOL,
    BYTES,
    CONTEXT,
    DOUBLE,
    DURATION,
    DYN,
    INT,
    NULL,
    STRING,
    TIMESTAMP,
    TYPE,
    UINT,
    Dyn,
    ListT,
    MapT,
    ObjT,
    Prim,
    Type,
    describe,
    input_type,
    kinds,
    literal_type,
    members,
    output_type,
    union,
)
from warden.policy.cel._analysis import pins, references
from warden.policy.cel._ast import (
    Binary,
    Call,
    Comprehension,
    Conditional,
    Expr,
    Has,
    Ident,
    Index,
    ListExpr,
    Literal,
    MapExpr,
    Pos,
    Select,
    Unary,
    select_path,
)
from warden.policy.cel._checker import check
from warden.policy.cel._parser import parse
from warden.spec import EffectClass, LoadedSpec
from warden.spec._loader import PathKey, format_path
from warden.tools import ToolDef, ToolRegistry

# -- checking one expression ------------------------------------------------------------

Report = Callable[[Pos, str, "str | None", "str | None"], None]

_STRING_METHODS = frozenset(
    {
        "contains", "startsWith", "endsWith", "matches", "lowerAscii", "upperAscii",
        "charAt", "indexOf", "lastIndexOf", "replace", "split", "substring", "trim",
    }
)  # fmt: skip
_LIST_METHODS = frozenset({"join", "slice", "flatten", "distinct", "sort", "sum", "min", "max"})
_RETURNS: dict[str, Type] = {
    "size": INT, "int": INT, "uint": UINT, "double": DOUBLE, "string": STRING, "bool": BOOL,
    "bytes": BYTES, "type": TYPE, "duration": DURATION, "timestamp": TIMESTAMP,
    "matches": BOOL, "contains": BOOL, "startsWith": BOOL, "endsWith": BOOL,
    "lowerAscii": STRING, "upperAscii": STRING, "charAt": STRING, "indexOf": INT,
    "lastIndexOf": INT, "replace": STRING, "split": ListT(STRING), "substring": STRING,
    "trim": STRING, "join": STRING, "strings.quote": STRING, "lists.range": ListT(INT),
    "sets.contains": BOOL, "sets.equivalent": BOOL, "sets.intersects": BOOL,
    "math.isInf": BOOL, "math.isNaN": BOOL, "math.isFinite": BOOL, "math.ceil": DOUBLE,
    "math.floor": DOUBLE, "math.round": DOUBLE, "math.trunc": DOUBLE, "math.sqrt": DOUBLE,
    "getFullYear": INT, "getMonth": INT, "getDate": INT, "getDayOfMonth": INT,
    "getDayOfWeek": INT, "getDayOfYear": INT, "getHours": INT, "getMinutes": INT,
    "getSeconds": INT, "getMilliseconds": INT,
}  # fmt: skip
_ORDERABLE = frozenset({"number", "string", "bytes", "bool", "timestamp", "duration"})
#: (left kind, right kind) -> result of ``+`` and ``-`` beyond number with number
_ADD = {
    ("string", "string"): STRING,
    ("bytes", "bytes"): BYTES,
    ("timestamp", "duration"): TIMESTAMP,
    ("duration", "timestamp"): TIMESTAMP,
    ("duration", "duration"): DURATION,
}
_SUB = {
    ("timestamp", "timestamp"): DURATION,
    ("timestamp", "duration"): TIMESTAMP,
    ("duration", "duration"): DURATION,
}


def _text(node: Expr, otherwise: str = "the expression") -> str:
    fields: list[str] = []
    while isinstance(node, Select):
        fields.append(node.field)
        node = node.operand
    if isinstance(node, Ident):  # a root, or a comprehension's variable
        return ".".join([node.name, *reversed(fields)])
    if fields:
        return otherwise
    if isinstance(node, Literal):
        return json.dumps(node.value) if isinstance(node.value, str) else repr(node.value)
    return otherwise


def _suggest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_text(options: Iterable[str]) -> str:
    names = sorted(set(options))
    if len(names) > 12:
        names = [*names[:12], "..."]
    return f"one of {names}" if names else "no fields"


class _Checker:
    """Types one resolved CEL tree against an environment, reporting every problem."""

    def __init__(
        self,
        env: Mapping[str, Type],
        report: Report,
        values: Mapping[tuple[str, ...], frozenset[str]],
        narrow: Callable[[frozenset[str]], Type | None] | None = None,
    ) -> None:
        self.env = env
        self.report = report
        self.values = values
        #: ``args`` for a subset of tools, when a side of ``&&`` pins ``tool.name``
        self.narrow = narrow

    def visit(self, node: Expr, scope: Mapping[str, Type]) -> Type:
        if isinstance(node, Literal):
            return literal_type(node.value)
        if isinstance(node, Ident):
            if node.is_var:
                return scope.get(node.name, DYN)
            return self.env.get(node.name, DYN)
        if isinstance(node, Select):
            operand = self.visit(node.operand, scope)
            return self._field(operand, node.field, node, has=False)
        if isinstance(node, Has):
            operand = self.visit(node.operand, scope)
            self._field(operand, node.field, node, has=True)
            return BOOL
        if isinstance(node, Index):
            return self._index(node, scope)
        if isinstance(node, Call):
            return self._call(node, scope)
        if isinstance(node, ListExpr):
            return ListT(union(self.visit(e, scope) for e in node.elements))
        if isinstance(node, MapExpr):
            keys = [self.visit(k, scope) for k, _ in node.entries]
            values = [self.visit(v, scope) for _, v in node.entries]
            return MapT(union(keys), union(values))
        if isinstance(node, Unary):
            operand = self.visit(node.operand, scope)
            wanted = "bool" if node.op == "!" else "number"
            allowed = {"bool"} if node.op == "!" else {"number", "duration"}
            found = kinds(operand)
            if found is not None and not found & allowed:
                self._mismatch(node, f"'{node.op}' needs a {wanted}", node.operand, operand)
                return DYN
            return BOOL if node.op == "!" else operand
        if isinstance(node, Binary):
            return self._binary(node, scope)
        if isinstance(node, Conditional):
            self._need_bool(node.condition, self.visit(node.condition, scope), "'? :'")
            return union([self.visit(node.then, scope), self.visit(node.otherwise, scope)])
        return self._comprehension(node, scope)

    # -- fields and indexing

    def _field(self, operand: Type, name: str, node: Select | Has, *, has: bool) -> Type:
        found: list[Type] = []
        missing: list[ObjT] = []
        wrong: list[Type] = []
        for m in members(operand):
            if isinstance(m, Dyn):
                return DYN
            if isinstance(m, MapT):
                found.append(m.value)
            elif isinstance(m, ObjT):
                if name in m.fields:
                    found.append(m.fields[name])
                elif m.closed:
                    missing.append(m)
                else:
                    found.append(DYN)
            elif m != NULL:  # selecting on null is the optional value's own business
                wrong.append(m)
        if found or not (missing or wrong):
            return union(found)
        dotted = f"{_text(node.operand, '(...)')}.{name}"
        lead = f"has({dotted}) is always false: " if has else f"{dotted!r} does not exist: "
        if missing:
            known = [f for m in missing for f in m.fields]
            owners = [m.what for m in missing]
            where = owners[0] if len(owners) == 1 else "any of " + ", ".join(owners)
            self.report(
                node.pos,
                f"{lead}no field {name!r} in {where}",
                _fields_text(known) + _suggest(name, known),
                repr(name),
            )
        else:
            self.report(
                node.pos,
                f"{lead}{_text(node.operand)} is {_a(describe(operand))}, which has no fields",
                "a map or a record",
                describe(operand),
            )
        return DYN

    def _index(self, node: Index, scope: Mapping[str, Type]) -> Type:
        operand = self.visit(node.operand, scope)
        self.visit(node.index, scope)
        key = node.index
        if isinstance(key, Literal) and type(key.value) is str:
            if any(isinstance(m, ObjT) for m in members(operand)):
                # args["rol"] is args.rol
                return self._field(
                    operand, key.value, Select(node.pos, node.operand, key.value), has=False
                )
        out: list[Type] = []
        for m in members(operand):
            if isinstance(m, Dyn):
                return DYN
            if isinstance(m, ListT):
                out.append(m.elem)
            elif isinstance(m, MapT):
                out.append(m.value)
            elif isinstance(m, ObjT):
                out.extend(m.fields.values())
                if not m.closed:
                    out.append(DYN)
        if not out and kinds(operand) not in (None, frozenset({"null"})):
            self._mismatch(node, "only lists and maps can be indexed", node.operand, operand)
            return DYN
        return union(out)

    # -- operators

    def _binary(self, node: Binary, scope: Mapping[str, Type]) -> Type:
        op = node.op
        if op in ("&&", "||"):
            # Each side of && matters only when the other holds (CEL absorbs an error next
            # to a false): what one side pins tool.name to narrows the other's args.
            left_env = self._narrowed(node.right) if op == "&&" else self
            right_env = self._narrowed(node.left) if op == "&&" else self
            self._need_bool(node.left, left_env.visit(node.left, scope), f"'{op}'")
            self._need_bool(node.right, right_env.visit(node.right, scope), f"'{op}'")
            return BOOL
        left = self.visit(node.left, scope)
        right = self.visit(node.right, scope)
        lk, rk = kinds(left), kinds(right)
        if op in ("==", "!="):
            self._known_values(node)
            if lk is not None and rk is not None and "null" not in lk | rk and not lk & rk:
                self._pair(
                    node,
                    left,
                    right,
                    f"'{op}' compares values of different types, which are never equal",
                )
            return BOOL
        if op in ("<", "<=", ">", ">="):
            if lk is not None and rk is not None and not (lk & rk & _ORDERABLE):
                self._pair(node, left, right, f"'{op}' cannot order these")
            return BOOL
        if op == "in":
            self._known_values(node)
            if rk is not None and not rk & {"list", "map"}:
                self._mismatch(node, "'in' needs a list or a map on its right", node.right, right)
            return BOOL
        return self._arithmetic(node, left, right, lk, rk)

    def _arithmetic(
        self,
        node: Binary,
        left: Type,
        right: Type,
        lk: frozenset[str] | None,
        rk: frozenset[str] | None,
    ) -> Type:
        if lk is None or rk is None:
            return DYN
        lk, rk = lk - {"null"}, rk - {"null"}  # an optional value's absence is its own check
        if not lk or not rk:
            return DYN
        results: list[Type] = []
        table = _ADD if node.op == "+" else _SUB if node.op == "-" else {}
        for a in lk:
            for b in rk:
                if a == b == "number":
                    results.append(_numeric_result(left, right))
                elif (a, b) in table:
                    results.append(table[(a, b)])
                elif node.op == "+" and a == b == "list":
                    results.append(ListT(DYN))
        if not results:
            self._pair(node, left, right, f"'{node.op}' cannot combine these")
            return DYN
        return union(results)

    def _known_values(self, node: Binary) -> None:
        """``tool.effect == "delte"``: a comparison with a value the path never holds."""
        pairs: list[tuple[Expr, list[Literal]]] = []
        if node.op in ("==", "!="):
            for subject, other in ((node.left, node.right), (node.right, node.left)):
                if isinstance(other, Literal) and type(other.value) is str:
                    pairs.append((subject, [other]))
        elif isinstance(node.right, ListExpr):
            literals = [e for e in node.right.elements if isinstance(e, Literal)]
            pairs.append((node.left, [e for e in literals if type(e.value) is str]))
        for subject, literals in pairs:
            path = select_path(subject)
            known = self.values.get(path) if path is not None else None
            if known is None:
                continue
            for literal in literals:
                if literal.value not in known:
                    self.report(
                        literal.pos,
                        f"{'.'.join(path or ())} is never {literal.value!r}, so this "
                        "comparison never holds",
                        _fields_text(known) + _suggest(literal.value, known),
                        repr(literal.value),
                    )

    def _narrowed(self, side: Expr) -> _Checker:
        pinned = pins(side).get(("tool", "name"))
        if pinned is None or self.narrow is None:
            return self
        args = self.narrow(pinned)
        if args is None:
            return self
        return _Checker({**self.env, "args": args}, self.report, self.values, self.narrow)

    # -- calls and macros

    def _call(self, node: Call, scope: Mapping[str, Type]) -> Type:
        receiver = self.visit(node.target, scope) if node.target is not None else None
        args = [self.visit(a, scope) for a in node.args]
        name = node.function
        if receiver is not None and node.target is not None:
            rk = kinds(receiver)
            if rk is not None:
                if name in _STRING_METHODS and "string" not in rk:
                    self._mismatch(node, f".{name}() is a string method", node.target, receiver)
                    return _RETURNS.get(name, DYN)
                if name in _LIST_METHODS and "list" not in rk:
                    self._mismatch(node, f".{name}() is a list method", node.target, receiver)
                    return DYN
                if name == "size" and not rk & {"string", "bytes", "list", "map"}:
                    self._mismatch(
                        node, "size() needs a string, bytes, list or map", node.target, receiver
                    )
            if name in ("slice", "distinct", "sort", "reverse"):
                return receiver
            if name in ("sum", "min", "max") and isinstance(receiver, ListT):
                return receiver.elem
        elif name in ("sum", "min", "max"):
            if len(args) == 1:
                return args[0].elem if isinstance(args[0], ListT) else DYN
            return union(args)
        elif name == "dyn":
            return DYN
        return _RETURNS.get(name, DYN)

    def _comprehension(self, node: Comprehension, scope: Mapping[str, Type]) -> Type:
        range_ = self.visit(node.range, scope)
        elems: list[Type] = []
        for m in members(range_):
            if isinstance(m, Dyn):
                elems = [DYN]
                break
            if isinstance(m, ListT):
                elems.append(m.elem)
            elif isinstance(m, MapT):
                elems.append(m.key)
            elif isinstance(m, ObjT):
                elems.append(STRING)
        if not elems:
            self._mismatch(node, f".{node.kind}() needs a list or a map", node.range, range_)
            elems = [DYN]
        inner = {**scope, node.var: union(elems)}
        if node.predicate is not None:
            self._need_bool(node.predicate, self.visit(node.predicate, inner), f".{node.kind}()")
        transform = self.visit(node.transform, inner) if node.transform is not None else None
        if node.kind in ("all", "exists", "exists_one"):
            return BOOL
        if node.kind == "map":
            return ListT(transform if transform is not None else DYN)
        return range_

    # -- reporting

    def _need_bool(self, node: Expr, found: Type, where: str) -> None:
        k = kinds(found)
        if k is not None and "bool" not in k:
            self._mismatch(node, f"{where} needs a bool", node, found)

    def _mismatch(self, node: Expr, message: str, subject: Expr, found: Type) -> None:
        self.report(
            subject.pos if subject is not node else node.pos,
            f"{message}; {_text(subject)} is {_a(describe(found))}",
            None,
            None,
        )

    def _pair(self, node: Binary, left: Type, right: Type, message: str) -> None:
        self.report(
            node.pos,
            f"{message}: {_text(node.left, 'the left side')} is {_a(describe(left))}, "
            f"{_text(node.right, 'the right side')} is {_a(describe(right))}",
            f"{_a(describe(left))} (or a value of the same kind) on the right",
            describe(right),
        )


def _a(text: str) -> str:
    return f"an {text}" if text[:1] in ("a", "e", "i", "o", "u") else f"a {text}"


def _numeric_result(left: Type, right: Type) -> Type:
    names = {m.name for m in (*members(left), *members(right)) if isinstance(m, Prim)}
    if "double" in names:
        return DOUBLE
    if names <= {"int"}:
        return INT
    return union([INT, UINT, DOUBLE])


# -- the spec ---------------------------------------------------------------------------


@dataclass
class _Spec:
    """What the checks of one spec share: the tools' types and where to report."""

    loaded: LoadedSpec
    registry: ToolRegistry | None
    issues: list[SpecIssue] = field(default_factory=list)
    inputs: dict[str, Type] = field(default_factory=dict)
    outputs: dict[str, Type] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = self.loaded.spec
        for name, declared in spec.tools.items():
            tool = self.registry.get(name) if self.registry is not None else None
            if tool is None or declared.any_schema is not None:
                self.inputs[name] = DYN
                self.outputs[name] = DYN if tool is None else output_type(name, tool.output)
                continue
            self.inputs[name] = input_type(name, tool.input)
            self.outputs[name] = output_type(name, tool.output)

    def args_for(self, tools: Iterable[str]) -> Type:
        names = [t for t in tools if t in self.inputs]
        return union(self.inputs[t] for t in names) if names else DYN

    def issue(
        self, path: PathKey, message: str, expected: str | None = None, found: str | None = None
    ) -> None:
        self.issues.append(self.loaded.issue(path, message, expected=expected, found=found))

    def cel_reporter(self, path: PathKey, prefix: str) -> Report:
        base = self.loaded.content_line_of(path)

        def report(pos: Pos, message: str, expected: str | None, found: str | None) -> None:
            line = None if base is None else base + pos[0] - 1
            self.issues.append(
                SpecIssue(
                    self.loaded.file,
                    line,
                    format_path(path),
                    f"{prefix}{message} (column {pos[1]})",
                    expected=expected,
                    found=found,
                )
            )

        return report


def _tree(source: str, roots: frozenset[str]) -> Expr | None:
    """The resolved tree, or None when it does not compile (``Policy`` reports that)."""
    try:
        return check(parse(source), roots)
    except (CelSyntaxError, CelCompileError, RecursionError):
        return None


def check_policy(loaded: LoadedSpec, registry: ToolRegistry | None = None) -> list[SpecIssue]:
    """Every type mistake in the spec's rules, facts and windows, located; [] if none.

    Without ``registry`` (no tool implementations at hand) arguments, facts and window
    fields are not checked; approver roles and the context still are.
    """
    spec = loaded.spec
    s = _Spec(loaded, registry)
    declared = frozenset(spec.tools)
    values: dict[tuple[str, ...], frozenset[str]] = {
        tuple(path.split(".")): known for path, known in CONTEXT_VALUES.items()
    }
    # Values the spec decides: a run can only be opened by a declared agent for a declared
    # task type (when it declares any).
    if spec.agents:
        values[("principal", "agent")] = frozenset(spec.agents)
    if spec.task_types:
        values[("run", "task_type")] = frozenset(t.name for t in spec.task_types)
    windows: dict[str, Type] = {
        name: INT if w.aggregate in ("count", "count_distinct") else DOUBLE
        for name, w in spec.windows.items()
    }
    facts: dict[str, Type] = {name: s.outputs.get(f.tool, DYN) for name, f in spec.facts.items()}
    base_env: dict[str, Type] = {
        **CONTEXT,
        "window": ObjT(windows, closed=False, what="`window`"),
        "facts": ObjT(facts, closed=False, what="`facts`"),
    }
    fact_users: dict[str, list[tuple[str, frozenset[str]]]] = {name: [] for name in spec.facts}
    roles = spec.escalation.approver_roles
    for i, rule in enumerate(spec.policies):
        if rule.approvers is not None and rule.approvers not in roles:
            s.issue(
                ("policies", i, "approvers"),
                f"rule {rule.name!r}: approver role {rule.approvers!r} is not in "
                "'escalation.approver_roles', so no approver could decide it",
                f"one of {roles}" + _suggest(rule.approvers, roles),
                repr(rule.approvers),
            )
        path: PathKey = ("policies", i, "when")
        tree = _tree(rule.when, CONTEXT_ROOTS)
        if tree is None:
            continue
        applicable = _applicable(rule.tools, tree, declared)
        narrow = _narrower(s, applicable) if registry is not None else None
        env = {**base_env, "args": s.args_for(applicable) if registry is not None else DYN}
        reporter = s.cel_reporter(path, f"rule {rule.name!r}: ")
        # A rule pinned to an undeclared tool is reported by ``Policy``; elsewhere in a
        # condition, a tool name that is not declared is a comparison that never holds.
        pinned = bool(rule.tools) or pins(tree).get(("tool", "name")) is not None
        rule_values = values if pinned else {**values, ("tool", "name"): declared}
        _Checker(env, reporter, rule_values, narrow).visit(tree, {})
        for ref in _references(tree, "facts"):
            if ref in fact_users:
                fact_users[ref].append((rule.name, applicable))
    for name, window in spec.windows.items():
        for tool_name in window.tool_names:
            _check_window(s, name, tool_name, window.aggregate, window.field)
    for name, declared_tool in spec.tools.items():
        if declared_tool.serialize_on and registry is not None:
            # Evaluated for every call of the tool: a mistake fails each one (schema_error).
            tree = _tree(declared_tool.serialize_on, frozenset({"args", "tenant"}))
            if tree is not None:
                env = {"args": s.inputs[name], "tenant": CONTEXT["tenant"]}
                reporter = s.cel_reporter(("tools", name, "serialize_on"), f"{name}: ")
                _Checker(env, reporter, values).visit(tree, {})
    for name in spec.facts:
        _check_fact(s, name, fact_users[name], declared, base_env, values)
    s.issues.sort(key=lambda i: (i.line or 0, i.path))
    return s.issues


def _schema_params(tool: ToolDef) -> frozenset[str] | None:
    """A tool's argument names (None when its schema names none: any are accepted)."""
    return schema_params(tool.input.schema if tool.input is not None else None)


def checked_policy(
    loaded: LoadedSpec,
    registry: ToolRegistry | None,
    *,
    tool_params: Mapping[str, frozenset[str] | None] | None = None,
    tool_effects: Mapping[str, EffectClass] | None = None,
) -> Policy:
    """``Policy(loaded, ...)``, failing with the compile errors and every ``check_policy``
    issue together, so one load reports all of them."""
    if registry is not None:  # the bound tools' argument names and effect classes
        if tool_params is None:
            tool_params = {t.name: _schema_params(t) for t in registry}
        if tool_effects is None:
            tool_effects = {t.name: t.effect for t in registry}
    try:
        policy = Policy(loaded, tool_params=tool_params, tool_effects=tool_effects)
    except SpecError as exc:
        extra = check_policy(loaded, registry)
        raise SpecError(sorted([*exc.issues, *extra], key=lambda i: i.line or 0)) from None
    issues = check_policy(loaded, registry)
    if issues:
        raise SpecError(issues)
    return policy


def _applicable(listed: list[str] | None, tree: Expr, declared: frozenset[str]) -> frozenset[str]:
    """The tools a rule can apply to: as ``Policy`` indexes it."""
    if listed:
        return frozenset(listed) & declared
    pinned = pins(tree).get(("tool", "name"))
    return declared if pinned is None else pinned & declared


def _narrower(s: _Spec, applicable: frozenset[str]) -> Callable[[frozenset[str]], Type | None]:
    def narrow(pinned: frozenset[str]) -> Type | None:
        both = applicable & pinned
        # No tool left: that side can never hold, and what it reads never matters.
        return s.args_for(both) if both else DYN

    return narrow


def _references(tree: Expr, root: str) -> set[str]:
    return {ref[1] for ref in references(tree) if ref[0] == root and len(ref) > 1}


def _parameters(s: _Spec, tool: str) -> ObjT | None:
    found = s.inputs.get(tool)
    return found if isinstance(found, ObjT) else None


def _check_window(s: _Spec, name: str, tool: str, aggregate: str, summed: str | None) -> None:
    """A ``sum``/``max`` window's bare ``field`` must be a number parameter. (``group_by``
    and ``field`` are CEL: ``Policy`` compiles them and refuses a bare name that is not
    a parameter of the window's tools, the ``group_by: requestor`` that failed open.)"""
    params = _parameters(s, tool)
    if params is None or summed is None or aggregate not in ("sum", "max"):
        return
    arg = summed[5:] if summed.startswith("args.") else summed
    if not arg.isidentifier() or arg not in params.fields:
        return
    found = kinds(params.fields[arg])
    if found is not None and "number" not in found:
        s.issue(
            ("windows", name, "field"),
            f"window {name!r}: {aggregate!r} aggregates numbers, and {tool}'s {arg!r} is "
            f"{_a(describe(params.fields[arg]))}",
            "a number parameter",
            describe(params.fields[arg]),
        )


def _check_fact(
    s: _Spec,
    name: str,
    users: list[tuple[str, frozenset[str]]],
    declared: frozenset[str],
    base_env: Mapping[str, Type],
    values: Mapping[tuple[str, ...], frozenset[str]],
) -> None:
    fact = s.loaded.spec.facts[name]
    rules = sorted({r for r, _ in users})
    used_by = (
        f"; every call that rule{'s' if len(rules) > 1 else ''} {', '.join(rules)} "
        f"decide{'' if len(rules) > 1 else 's'} would be denied (fact_error)"
        if rules
        else ""
    )
    params = _parameters(s, fact.tool)
    if params is not None:
        for arg in fact.args:
            if arg not in params.fields and params.closed:
                s.issue(
                    ("facts", name, "args", arg),
                    f"fact {name!r}: {fact.tool} has no parameter {arg!r}{used_by}",
                    _fields_text(params.fields) + _suggest(arg, params.fields),
                    repr(arg),
                )
        for missing in sorted(params.required - set(fact.args)):
            s.issue(
                ("facts", name, "args"),
                f"fact {name!r}: {fact.tool} needs the parameter {missing!r}, which the fact "
                f"does not give{used_by}",
                f"args with {sorted(params.required)}",
                repr(sorted(fact.args)),
            )
    applicable: frozenset[str] = frozenset().union(*(tools for _, tools in users)) or declared
    env = {
        root: t
        for root, t in {**base_env, "args": s.args_for(applicable)}.items()
        if root in FACT_ARG_ROOTS
    }
    if s.registry is None:
        env["args"] = DYN
    for arg, source in fact.args.items():
        path: PathKey = ("facts", name, "args", arg)
        tree = _tree(source, FACT_ARG_ROOTS)
        if tree is None:
            continue
        reporter = s.cel_reporter(path, f"fact {name!r}, argument {arg!r}: ")
        found = _Checker(env, reporter, values).visit(tree, {})
        wanted = params.fields.get(arg) if params is not None else None
        fk, wk = kinds(found), kinds(wanted) if wanted is not None else None
        if fk is not None and wk is not None and not fk & wk:
            reporter(
                tree.pos,
                f"{fact.tool} takes {_a(describe(wanted or DYN))} as {arg!r}, and this gives "
                f"{_a(describe(found))}{used_by}",
                describe(wanted or DYN),
                describe(found),
            )
