"""Warnings about a spec's rules that load but cannot mean what their author meant.

``lint(loaded)`` reads each rule's condition as a conjunction (its top-level ``&&``) and
finds:

- rules that can never match: comparisons of one context path with literals that cannot
  all hold (``args.amount > 100 && args.amount < 50``, ``tool.name == "a" && tool.name ==
  "b"``, ``x == 1 && x != 1``, ``x in ["a"] && x == "b"``), or a condition on the tool
  (``tool.effect == "delete"``) that none of the tools it is pinned to meets, as the spec
  declares them;
- rules that never change a decision: whenever one matches, a rule with a stronger effect
  (or another ``deny``) matches too, because each of that rule's conjuncts is one of its
  own or follows from its comparisons (``args.amount > 200`` gives ``args.amount > 100``);
- write tools no rule mentions (by ``tool.name``, ``tools:``, ``tool.effect`` or
  ``tool.scope``), left to the tier's default.

Only these syntactic forms are understood; anything else is taken as "may hold", so a
warning is always real (no false alarms) but not every dead rule is found. The issues are
warnings: the spec still loads. Rules whose condition does not compile are skipped
(``Policy`` reports them).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from warden.errors import CelCompileError, CelSyntaxError, SpecIssue, UsageError
from warden.policy._engine import CONTEXT_ROOTS, _default
from warden.policy._explain import tool_context_from_spec
from warden.policy.cel._analysis import pins
from warden.policy.cel._ast import Binary, Expr, ListExpr, Literal, Unary, select_path
from warden.policy.cel._checker import check
from warden.policy.cel._parser import parse
from warden.policy.cel._values import UInt
from warden.spec import Effect, EffectClass, LoadedSpec, Rule, RuleEffect

Path = tuple[str, ...]
_ORDER = frozenset({"<", "<=", ">", ">="})
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NEGATE = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_TOOL_NAME: Path = ("tool", "name")


@dataclass(frozen=True, slots=True)
class Atom:
    """``path op value`` (``value`` a tuple for ``in``), with CEL's equality on values."""

    path: Path
    op: str
    value: Any

    def __str__(self) -> str:
        shown = (
            "[" + ", ".join(_show(v) for v in self.value) + "]"
            if self.op == "in"
            else _show(self.value)
        )
        return f"{'.'.join(self.path)} {self.op} {shown}"


def _show(value: Any) -> str:
    return (
        json.dumps(value)
        if isinstance(value, str | bool | int | float) or value is None
        else repr(value)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal | UInt) and not isinstance(value, bool)


def _key(value: Any) -> tuple[str, Any]:
    """Values CEL holds equal get one key: numbers of any type compare by value."""
    if _is_number(value):
        # Python compares (and hashes) int, float and Decimal by exact value, as CEL does
        return ("num", int(value) if isinstance(value, UInt) else value)
    return (type(value).__name__, value)


_NOT_LITERAL = object()


def _literal(node: Expr) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Unary) and node.op == "-" and isinstance(node.operand, Literal):
        if _is_number(node.operand.value) and not isinstance(node.operand.value, UInt):
            return -node.operand.value
    return _NOT_LITERAL


def _atom(node: Expr) -> Atom | None:
    if not isinstance(node, Binary):
        return None
    if node.op == "in":
        path = select_path(node.left)
        if path is None or not isinstance(node.right, ListExpr):
            return None
        values = [_literal(e) for e in node.right.elements]
        if any(v is _NOT_LITERAL for v in values):
            return None
        return Atom(path, "in", tuple(values))
    if node.op not in _FLIP:
        return None
    for subject, other, op in (
        (node.left, node.right, node.op),
        (node.right, node.left, _FLIP[node.op]),
    ):
        path = select_path(subject)
        value = _literal(other)
        if path is not None and value is not _NOT_LITERAL:
            if op in _ORDER and not _is_number(value):
                return None  # orderings of strings, timestamps: not reasoned about
            return Atom(path, op, value)
    return None


def _conjuncts(node: Expr) -> list[Expr]:
    if isinstance(node, Binary) and node.op == "&&":
        return [*_conjuncts(node.left), *_conjuncts(node.right)]
    return [node]


def _shape(node: Any) -> Any:
    """The node without source positions, for comparing conditions."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (
            type(node).__name__,
            *(_shape(getattr(node, f.name)) for f in dataclasses.fields(node) if f.name != "pos"),
        )
    if isinstance(node, tuple | list):
        return tuple(_shape(n) for n in node)
    if _is_number(node):
        return _key(node)
    return node


def _atom_shape(atom: Atom) -> Any:
    if atom.op == "in":
        return ("atom", atom.path, "in", frozenset(_key(v) for v in atom.value))
    return ("atom", atom.path, atom.op, _key(atom.value))


# -- one path's comparisons --------------------------------------------------------------


def _satisfiable(atoms: Sequence[Atom]) -> bool:
    """Whether some value makes every comparison true (numbers taken as reals)."""
    eq: set[tuple[str, Any]] = set()
    ne: set[tuple[str, Any]] = set()
    ins: list[set[tuple[str, Any]]] = []
    lo: tuple[Any, bool] | None = None  # (bound, inclusive)
    hi: tuple[Any, bool] | None = None
    for atom in atoms:
        if atom.op == "==":
            eq.add(_key(atom.value))
        elif atom.op == "!=":
            ne.add(_key(atom.value))
        elif atom.op == "in":
            ins.append({_key(v) for v in atom.value})
        else:
            bound = (atom.value, atom.op in ("<=", ">="))
            if atom.op in (">", ">="):
                if lo is None or bound[0] > lo[0] or (bound[0] == lo[0] and not bound[1]):
                    lo = bound
            elif hi is None or bound[0] < hi[0] or (bound[0] == hi[0] and not bound[1]):
                hi = bound

    def within(key: tuple[str, Any]) -> bool:
        if lo is None and hi is None:
            return True
        if key[0] != "num":
            return False  # an ordering holds only for a number
        x = key[1]
        return (lo is None or x > lo[0] or (x == lo[0] and lo[1])) and (
            hi is None or x < hi[0] or (x == hi[0] and hi[1])
        )

    if len(eq) > 1:
        return False
    candidates: set[tuple[str, Any]] | None = set(eq) if eq else None
    for options in ins:
        candidates = set(options) if candidates is None else candidates & options
    if candidates is not None:
        return any(c not in ne and within(c) for c in candidates)
    if lo is not None and hi is not None:
        if lo[0] > hi[0]:
            return False
        if lo[0] == hi[0]:
            return lo[1] and hi[1] and ("num", lo[0]) not in ne
    return True


def _implied(atom: Atom, given: Sequence[Atom]) -> bool:
    """Whether ``given`` (all true) makes ``atom`` true."""
    same = [a for a in given if a.path == atom.path]
    if not same:
        return False
    if atom.op in _ORDER:
        # Negating an ordering is exact only for a number: the path must be one.
        numeric = any(
            (a.op in _ORDER)
            or (a.op == "==" and _is_number(a.value))
            or (a.op == "in" and a.value and all(_is_number(v) for v in a.value))
            for a in same
        )
        if not numeric:
            return False
    if atom.op == "in":
        negations = [Atom(atom.path, "!=", v) for v in atom.value]
    else:
        negations = [Atom(atom.path, _NEGATE[atom.op], atom.value)]
    return not _satisfiable([*same, *negations])


# -- rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    index: int
    rule: Rule
    tree: Expr
    atoms: tuple[Atom, ...]
    #: every conjunct's shape (atoms by their normal form), ``tools:`` included
    shapes: frozenset[Any]


def _parse(index: int, rule: Rule) -> _Parsed | None:
    try:
        tree = check(parse(rule.when), CONTEXT_ROOTS)
    except (CelSyntaxError, CelCompileError, RecursionError):
        return None
    atoms: list[Atom] = []
    shapes: set[Any] = set()
    for conjunct in _conjuncts(tree):
        atom = _atom(conjunct)
        if atom is None:
            shapes.add(_shape(conjunct))
        else:
            atoms.append(atom)
            shapes.add(_atom_shape(atom))
    if rule.tools:
        atom = Atom(_TOOL_NAME, "in", tuple(rule.tools))
        atoms.append(atom)
        shapes.add(_atom_shape(atom))
    return _Parsed(index, rule, tree, tuple(atoms), frozenset(shapes))


def _never(p: _Parsed, loaded: LoadedSpec) -> str | None:
    if ("Literal", False) in p.shapes:
        return "its condition has a literal 'false' conjunct"
    by_path: dict[Path, list[Atom]] = {}
    for atom in p.atoms:
        by_path.setdefault(atom.path, []).append(atom)
    for atoms in by_path.values():
        if not _satisfiable(atoms):
            return " && ".join(str(a) for a in atoms) + " cannot all hold"
    # The tools it is pinned to, with what the spec declares of them (``tool.effect``...).
    pinned = pins(p.tree).get(_TOOL_NAME)
    names = set(pinned) if pinned is not None else None
    if p.rule.tools:
        names = set(p.rule.tools) if names is None else names & set(p.rule.tools)
    about_tool = {path: atoms for path, atoms in by_path.items() if path[0] == "tool"}
    about_tool.pop(_TOOL_NAME, None)
    if not names or not about_tool:
        return None
    seen = []
    for name in sorted(names):
        try:
            context, _ = tool_context_from_spec(loaded, name)
        except UsageError:
            return None  # an undeclared effect (or tool): not known here
        declared = loaded.spec.tools[name]
        # what the spec leaves out, the implementation may set: only declared values count
        for key, value in (
            ("scope", declared.scope),
            ("untrusted_output", declared.untrusted_output),
        ):
            if value is None:
                del context[key]
        if any(len(path) != 2 or path[1] not in context for path in about_tool):
            return None
        failing = next(
            (
                path
                for path, atoms in about_tool.items()
                if not _satisfiable([*atoms, Atom(path, "==", context[path[1]])])
            ),
            None,
        )
        if failing is None:
            return None  # this tool can meet every condition on the tool
        seen.append(f"{name}: {'.'.join(failing)} is {_show(context[failing[1]])}")
    atoms_text = " && ".join(str(a) for atoms in about_tool.values() for a in atoms)
    return f"{atoms_text} holds for none of the tools it applies to ({'; '.join(seen)})"


def _covers(a: _Parsed, b: _Parsed) -> bool:
    """Whenever ``b`` matches, ``a`` does: each conjunct of ``a`` is one of ``b``'s or
    follows from ``b``'s comparisons."""
    a_atoms = {_atom_shape(x): x for x in a.atoms}
    for shape in a.shapes:
        if shape in b.shapes:
            continue
        atom = a_atoms.get(shape)
        if atom is None or not _implied(atom, b.atoms):
            return False
    return True


def _shadows(a: _Parsed, b: _Parsed) -> bool:
    """Whether ``a`` makes ``b`` irrelevant to the decision's effect."""
    if RuleEffect.SCORE in (a.rule.effect, b.rule.effect) or "shadow" in (a.rule.mode, b.rule.mode):
        return False  # decides nothing (score), or is never enforced (shadow)
    ea, eb = Effect(a.rule.effect.value), Effect(b.rule.effect.value)
    if eb is Effect.ALLOW and ea is not Effect.DENY:
        return False  # an allow also lifts the default deny of deletes
    if ea.rank < eb.rank or (ea is eb and ea is not Effect.DENY):
        return False
    if ea is eb and a.shapes == b.shapes and a.index > b.index:
        return False  # two identical deny rules: report the later one only
    return _covers(a, b)


def _tool_mentions(parsed: Iterable[_Parsed]) -> dict[Path, set[str]]:
    found: dict[Path, set[str]] = {
        ("tool", "name"): set(),
        ("tool", "effect"): set(),
        ("tool", "scope"): set(),
    }
    for p in parsed:
        pinned = pins(p.tree)
        for path, values in found.items():
            values |= pinned.get(path, frozenset())
        if p.rule.tools:
            found[_TOOL_NAME] |= set(p.rule.tools)
    return found


def lint(loaded: LoadedSpec) -> list[SpecIssue]:
    """Warnings for ``loaded``'s rules and tools (see the module docstring), in spec order."""
    spec = loaded.spec
    issues: list[SpecIssue] = []
    parsed = [p for i, r in enumerate(spec.policies) if (p := _parse(i, r)) is not None]
    dead: set[int] = set()
    for p in parsed:
        why = _never(p, loaded)
        if why is not None:
            dead.add(p.index)
            issues.append(
                loaded.issue(
                    ("policies", p.index, "when"),
                    f"rule {p.rule.name!r} can never match: {why}",
                )
            )
    for b in parsed:
        if b.index in dead:
            continue
        for a in parsed:
            if a is b or a.index in dead or not _shadows(a, b):
                continue
            same = a.shapes == b.shapes
            issues.append(
                loaded.issue(
                    ("policies", b.index, "when"),
                    f"rule {b.rule.name!r} ({b.rule.effect.value}) never decides: "
                    + (
                        f"rule {a.rule.name!r} has the same condition"
                        if same
                        else f"whenever it matches, rule {a.rule.name!r} matches too"
                    )
                    + f" and its effect ({a.rule.effect.value}) "
                    + ("is as strong" if a.rule.effect is b.rule.effect else "is stronger"),
                )
            )
            break
    mentioned = _tool_mentions(parsed)
    for name, tool in spec.tools.items():
        effect = tool.effect
        if effect is None or effect is EffectClass.READ:
            continue
        if (
            name in mentioned[_TOOL_NAME]
            or effect.value in mentioned[("tool", "effect")]
            or (tool.scope is not None and tool.scope in mentioned[("tool", "scope")])
        ):
            continue
        default, _, _ = _default(effect, spec.tier, False)
        issues.append(
            loaded.issue(
                ("tools", name),
                f"write tool {name!r} ({effect.value}) is not mentioned by any rule: the "
                f"tier's default decides every call ({spec.tier.value}: {default.value})",
            )
        )
    issues.sort(key=lambda i: i.line or 0)
    return issues
