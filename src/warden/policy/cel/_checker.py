"""Static checks between parsing and compiling: names, functions, macros.

Resolves every identifier (a declared root, a comprehension variable, or a type name such
as ``int``) and every namespaced function (``math.ceil(x)`` parses as a method call on
``math``), expands the macros (``has``, ``all``, ``exists``, ``exists_one``, ``map``,
``filter``, ``sortBy``) into dedicated nodes, and rejects unknown functions and wrong
argument counts, so that a policy with a typo fails when it is loaded rather than when a
rule first runs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Set

from warden.errors import CelCompileError, CelEvalError
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
)
from warden.policy.cel._functions import GLOBAL_FUNCTIONS, MEMBER_FUNCTIONS, NAMESPACES, Arity
from warden.policy.cel._parser import RESERVED, check_int_literal
from warden.policy.cel._time import parse_duration, parse_timestamp
from warden.policy.cel._values import TYPE_NAMES, CelType, UInt

# Macro name -> accepted argument counts (the first argument is always the variable).
_MACROS = {
    "all": {2},
    "exists": {2},
    "exists_one": {2},
    "map": {2, 3},
    "filter": {2},
    "sortBy": {2},  # cel-go ext.Lists
}
# cel-go expands these as macros and rejects non-numeric literal arguments when parsing.
_NUMERIC_LITERAL_ONLY = frozenset({"math.greatest", "math.least"})


def check(node: Expr, roots: Set[str]) -> Expr:
    """The resolved tree; raises ``CelCompileError`` at the offending node."""
    return _Checker(roots).visit(node, frozenset())


def _error(message: str, node: Expr) -> CelCompileError:
    return CelCompileError(message, *node.pos)


def _arguments(counts: Arity | Set[int]) -> str:
    if isinstance(counts, range):
        return f"{counts.start} or more arguments"
    ordered = sorted(counts)
    text = " or ".join(str(n) for n in ordered)
    return f"{text} argument" if ordered == [1] else f"{text} arguments"


class _Checker:
    def __init__(self, roots: Set[str]) -> None:
        self.roots = roots

    def visit(self, node: Expr, scope: frozenset[str]) -> Expr:
        if isinstance(node, Literal):
            check_int_literal(node)
            return node
        if isinstance(node, Ident):
            return self._ident(node, scope)
        if isinstance(node, Select):
            return Select(node.pos, self.visit(node.operand, scope), node.field)
        if isinstance(node, Index):
            operand = self.visit(node.operand, scope)
            return Index(node.pos, operand, self.visit(node.index, scope))
        if isinstance(node, Call):
            return self._call(node, scope)
        if isinstance(node, ListExpr):
            return ListExpr(node.pos, tuple(self.visit(e, scope) for e in node.elements))
        if isinstance(node, MapExpr):
            entries = tuple((self.visit(k, scope), self.visit(v, scope)) for k, v in node.entries)
            return MapExpr(node.pos, entries)
        if isinstance(node, Unary):
            return Unary(node.pos, node.op, self.visit(node.operand, scope))
        if isinstance(node, Binary):
            left = self.visit(node.left, scope)
            return Binary(node.pos, node.op, left, self.visit(node.right, scope))
        if isinstance(node, Conditional):
            return Conditional(
                node.pos,
                self.visit(node.condition, scope),
                self.visit(node.then, scope),
                self.visit(node.otherwise, scope),
            )
        # Has and Comprehension only exist after checking; seeing one means a double check.
        raise _error(f"unexpected node {type(node).__name__}", node)

    def _ident(self, node: Ident, scope: frozenset[str]) -> Expr:
        if node.name in scope:
            return Ident(node.pos, node.name, is_var=True)
        if node.name in self.roots:
            return node
        if node.name in TYPE_NAMES:
            return Literal(node.pos, CelType(node.name))
        known = ", ".join(sorted(self.roots)) or "none"
        raise _error(f"undeclared reference to '{node.name}' (roots: {known})", node)

    def _call(self, node: Call, scope: frozenset[str]) -> Expr:
        name, args = node.function, node.args
        target = node.target
        if isinstance(target, Ident) and target.name in NAMESPACES and target.name not in scope:
            qualified = f"{target.name}.{name}"
            if qualified in GLOBAL_FUNCTIONS:
                return self._call(Call(target.pos, qualified, None, args), scope)
            if target.name not in self.roots:
                raise _error(f"unknown function '{qualified}'{_suggest(qualified)}", target)
        if target is None:
            if name == "has":
                return self._has(node, scope)
            entry = GLOBAL_FUNCTIONS.get(name)
            if entry is None:
                if name in MEMBER_FUNCTIONS or name in _MACROS:
                    raise _error(f"'{name}' must be called as a method: x.{name}(...)", node)
                raise _error(f"unknown function '{name}'{_suggest(name)}", node)
            if len(args) not in entry[0]:
                raise _error(f"{name}() takes {_arguments(entry[0])}, got {len(args)}", node)
            if name in _NUMERIC_LITERAL_ONLY:
                _check_numeric_literals(node)
            if name in ("timestamp", "duration"):
                _check_time_literal(node)
            return Call(node.pos, name, None, tuple(self.visit(a, scope) for a in args))
        if name in _MACROS:
            return self._comprehension(node, target, scope)
        entry = MEMBER_FUNCTIONS.get(name)
        if entry is None:
            if name in GLOBAL_FUNCTIONS or name == "has":
                raise _error(f"'{name}' must be called as a function: {name}(...)", node)
            namespaced = sorted(f for f in GLOBAL_FUNCTIONS if f.endswith(f".{name}"))
            if namespaced:
                raise _error(f"'{name}' is a namespaced function: {namespaced[0]}(...)", node)
            raise _error(f"unknown method '{name}'{_suggest(name, method=True)}", node)
        if len(args) not in entry[0]:
            raise _error(f".{name}() takes {_arguments(entry[0])}, got {len(args)}", node)
        receiver = self.visit(target, scope)
        return Call(node.pos, name, receiver, tuple(self.visit(a, scope) for a in args))

    def _has(self, node: Call, scope: frozenset[str]) -> Expr:
        if len(node.args) != 1:
            raise _error(f"has() takes 1 argument, got {len(node.args)}", node)
        (arg,) = node.args
        if not isinstance(arg, Select):
            raise _error("has() needs a field selection, as in has(m.field)", arg)
        return Has(arg.pos, self.visit(arg.operand, scope), arg.field)

    def _comprehension(self, node: Call, target: Expr, scope: frozenset[str]) -> Expr:
        name, args = node.function, node.args
        if len(args) not in _MACROS[name]:
            raise _error(f".{name}() takes {_arguments(_MACROS[name])}, got {len(args)}", node)
        var = args[0]
        if not isinstance(var, Ident) or var.name in RESERVED:
            raise _error(f"the first argument of .{name}() must be a variable name", var)
        range_ = self.visit(target, scope)
        inner = scope | {var.name}
        checked = tuple(self.visit(a, inner) for a in args[1:])
        if name == "map":
            predicate = checked[0] if len(checked) == 2 else None
            return Comprehension(node.pos, name, range_, var.name, predicate, checked[-1])
        if name == "sortBy":
            return Comprehension(node.pos, name, range_, var.name, None, checked[0])
        return Comprehension(node.pos, name, range_, var.name, checked[0], None)


def _suggest(name: str, *, method: bool = False) -> str:
    """A "did you mean" hint for a misspelled function name, or nothing."""
    known = [*MEMBER_FUNCTIONS, *_MACROS] if method else [*GLOBAL_FUNCTIONS, "has"]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    if not close:
        return ""
    return f"; did you mean '{close[0]}'?"


def _check_time_literal(node: Call) -> None:
    """A literal ``timestamp("...")``/``duration("...")`` that cannot parse is a load error:
    notably a timestamp without a zone (``Z`` or ``+hh:mm``), which would otherwise fail
    every evaluation (or, elsewhere, be compared as local time)."""
    (arg,) = node.args
    if not (isinstance(arg, Literal) and type(arg.value) is str):
        return
    try:
        if node.function == "timestamp":
            parse_timestamp(arg.value)
        else:
            parse_duration(arg.value)
    except CelEvalError as exc:
        hint = ""
        if node.function == "timestamp" and _ZONELESS.fullmatch(arg.value):
            hint = "; a timestamp needs its time zone, e.g. 2026-01-01T00:00:00Z or +02:00"
        raise _error(f"{exc}{hint}", arg) from None


_ZONELESS = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?")


def _numeric_literal(node: Expr) -> bool:
    """Whether ``node`` may be a number: anything but a literal that is not one."""
    if isinstance(node, Literal):
        return type(node.value) in (int, float, UInt)
    return not isinstance(node, ListExpr | MapExpr)


def _check_numeric_literals(node: Call) -> None:
    """cel-go's parse-time checks on ``math.greatest``/``math.least`` arguments."""
    if len(node.args) == 1:
        (arg,) = node.args
        if isinstance(arg, ListExpr):
            if arg.elements and all(_numeric_literal(e) for e in arg.elements):
                return
        elif _numeric_literal(arg):
            return
        raise _error(f"{node.function}() takes numbers or one non-empty list of numbers", arg)
    for arg in node.args:
        if not _numeric_literal(arg):
            raise _error(f"{node.function}() takes numbers; this argument is not one", arg)
