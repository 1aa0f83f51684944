"""Static facts about a checked expression: which context paths it reads, and which
string values it forces a path to take (used to index policy rules by tool name)."""

from __future__ import annotations

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
    Select,
    Unary,
    select_path,
)

Path = tuple[str, ...]


def _children(node: Expr) -> tuple[Expr, ...]:
    if isinstance(node, Select | Has | Unary):
        return (node.operand,)
    if isinstance(node, Index):
        return (node.operand, node.index)
    if isinstance(node, Call):
        return node.args if node.target is None else (node.target, *node.args)
    if isinstance(node, ListExpr):
        return node.elements
    if isinstance(node, MapExpr):
        return tuple(part for entry in node.entries for part in entry)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Conditional):
        return (node.condition, node.then, node.otherwise)
    if isinstance(node, Comprehension):
        parts = (node.range, node.predicate, node.transform)
        return tuple(part for part in parts if part is not None)
    return ()


def references(node: Expr) -> frozenset[Path]:
    """Every maximal static select chain from a root: ``args.a.b`` gives ``("args", "a",
    "b")``; a root used otherwise (indexed, passed to a function) gives ``("args",)``."""
    found: set[Path] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Select | Ident):
            chain = select_path(current)
            if chain is not None:
                found.add(chain)
                continue
        elif isinstance(current, Has):
            chain = select_path(current.operand)
            if chain is not None:
                found.add((*chain, current.field))
                continue
        elif isinstance(current, Literal):
            continue
        stack.extend(_children(current))
    return frozenset(found)


def pins(node: Expr) -> dict[Path, frozenset[str]]:
    """For each path the expression can only be true with, the strings it must equal.

    ``p == "a"`` and ``p in ["a", "b"]`` pin ``p``; ``&&`` intersects what its sides pin,
    ``||`` unites what both of its sides pin (a path pinned on one side only is free).
    Anything else pins nothing. This is sound under CEL's error absorption: a true ``&&``
    needs both sides true, a true ``||`` at least one.
    """
    if not isinstance(node, Binary):
        return {}
    if node.op == "&&":
        merged = pins(node.left)
        for path, values in pins(node.right).items():
            merged[path] = merged[path] & values if path in merged else values
        return merged
    if node.op == "||":
        left, right = pins(node.left), pins(node.right)
        return {path: left[path] | right[path] for path in left.keys() & right.keys()}
    if node.op == "==":
        for subject, other in ((node.left, node.right), (node.right, node.left)):
            pinned = select_path(subject)
            if pinned is not None and isinstance(other, Literal) and type(other.value) is str:
                return {pinned: frozenset({other.value})}
        return {}
    if node.op == "in":
        pinned = select_path(node.left)
        options = node.right
        if (
            pinned is not None
            and isinstance(options, ListExpr)
            and all(isinstance(e, Literal) and type(e.value) is str for e in options.elements)
        ):
            return {pinned: frozenset(e.value for e in options.elements if isinstance(e, Literal))}
    return {}
