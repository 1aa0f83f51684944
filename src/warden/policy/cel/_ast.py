"""Syntax tree of a CEL expression, as produced by the parser and refined by the checker.

The parser yields the surface forms (``Call`` for everything that looks like a call); the
checker rewrites macro calls into ``Has`` and ``Comprehension`` and marks identifiers bound
by a comprehension, so the compiler and the static analyses see one small, resolved tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (line, column), both 1-based within the expression source.
Pos = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Literal:
    pos: Pos
    value: Any


@dataclass(frozen=True, slots=True)
class Ident:
    pos: Pos
    name: str
    # True once the checker has resolved the name to a comprehension variable (not a root).
    is_var: bool = False


@dataclass(frozen=True, slots=True)
class Select:
    pos: Pos
    operand: Expr
    field: str


@dataclass(frozen=True, slots=True)
class Index:
    pos: Pos
    operand: Expr
    index: Expr


@dataclass(frozen=True, slots=True)
class Call:
    pos: Pos
    function: str
    target: Expr | None
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class ListExpr:
    pos: Pos
    elements: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class MapExpr:
    pos: Pos
    entries: tuple[tuple[Expr, Expr], ...]


@dataclass(frozen=True, slots=True)
class Unary:
    pos: Pos
    op: str  # "!" or "-"
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    pos: Pos
    op: str  # "&&", "||", "==", "!=", "<", "<=", ">", ">=", "in", "+", "-", "*", "/", "%"
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Conditional:
    pos: Pos
    condition: Expr
    then: Expr
    otherwise: Expr


@dataclass(frozen=True, slots=True)
class Has:
    pos: Pos
    operand: Expr
    field: str


@dataclass(frozen=True, slots=True)
class Comprehension:
    pos: Pos
    kind: str  # "all", "exists", "exists_one", "map", "filter", "sortBy"
    range: Expr
    var: str
    # Predicate for all/exists/exists_one/filter, and the optional filter of 3-argument map.
    predicate: Expr | None
    # Transform of map(), the key of sortBy(); None for the other kinds.
    transform: Expr | None


Expr = (
    Literal
    | Ident
    | Select
    | Index
    | Call
    | ListExpr
    | MapExpr
    | Unary
    | Binary
    | Conditional
    | Has
    | Comprehension
)


def select_path(node: Expr) -> tuple[str, ...] | None:
    """The static path of a select chain rooted at a root identifier, e.g. ``("args", "x")``."""
    fields: list[str] = []
    while isinstance(node, Select):
        fields.append(node.field)
        node = node.operand
    if isinstance(node, Ident) and not node.is_var:
        fields.append(node.name)
        return tuple(reversed(fields))
    return None
