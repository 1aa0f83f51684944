"""Checked CEL tree to nested Python closures: the evaluation hot path.

Each node becomes one closure taking the activation (root name -> value). Speed comes
from doing at compile time whatever does not depend on the activation:

- select chains rooted at an identifier (``args.amount``, ``facts.order.total``) are one
  closure that tries plain subscripting first and only walks step by step, for a precise
  error, when that fails;
- comparisons against a literal get a closure with an inline type check for the common
  case (``tool.name == "x"``, ``args.amount > 100.0``) and fall back to the general
  operator otherwise;
- ``x in ["a", "b"]`` becomes a frozenset lookup, literal regexes are compiled once,
  ``&&``/``||`` chains are flattened, and subtrees without identifiers are folded.

Comprehension variables live in a copy of the activation made once per comprehension, so
evaluation never mutates shared state and compiled expressions are safe to share between
threads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

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
from warden.policy.cel._comprehensions import COMPREHENSIONS
from warden.policy.cel._functions import GLOBAL_FUNCTIONS, MEMBER_FUNCTIONS, matches
from warden.policy.cel._operators import Fn, and_, equals_constant, or_, order_constant
from warden.policy.cel._values import (
    ARITH_OPS,
    ORDER_OPS,
    build_map,
    cel_eq,
    compare,
    contains,
    has_field,
    index,
    is_immutable,
    negate,
    no_overload,
    select,
)

_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def compile_tree(node: Expr) -> Fn:
    """A function evaluating ``node``; it raises only ``CelEvalError``."""
    body = _Compiler().compile(node)

    def evaluate(activation: Mapping[str, Any]) -> Any:
        try:
            return body(activation)
        except CelEvalError:
            raise
        except RecursionError:
            raise CelEvalError("evaluation nested too deeply") from None
        except Exception as error:  # the contract: nothing but CelEvalError escapes
            raise CelEvalError(_describe(error)) from error

    return evaluate


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"no such key: {error.args[0] if error.args else ''}"
    if isinstance(error, ZeroDivisionError):
        return "division by zero"
    return f"{type(error).__name__}: {error}"


def _unbound(name: str) -> CelEvalError:
    return CelEvalError(f"no value for '{name}' in the activation")


class _Compiler:
    def __init__(self) -> None:
        # Closures known to return this fixed, immutable value whatever the activation.
        self._constants: dict[Fn, Any] = {}
        # Closures building a list literal whose elements are all constants.
        self._constant_lists: dict[Fn, tuple[Any, ...]] = {}

    def compile(self, node: Expr) -> Fn:
        if isinstance(node, Literal):
            return self._constant(node.value)
        if isinstance(node, Ident):
            return _ident(node.name)
        if isinstance(node, Select):
            return self._select(node)
        if isinstance(node, Index):
            return self._index(node)
        if isinstance(node, Call):
            return self._call(node)
        if isinstance(node, ListExpr):
            return self._list(node)
        if isinstance(node, MapExpr):
            return self._map(node)
        if isinstance(node, Unary):
            return self._unary(node)
        if isinstance(node, Binary):
            return self._binary(node)
        if isinstance(node, Conditional):
            return self._conditional(node)
        if isinstance(node, Has):
            return self._has(node)
        return self._comprehension(node)

    # -- constants ---------------------------------------------------------------------

    def _constant(self, value: Any) -> Fn:
        def constant(a: Mapping[str, Any]) -> Any:
            return value

        self._constants[constant] = value
        return constant

    def _folded(self, fn: Fn, *children: Fn) -> Fn:
        """``fn`` itself, or a constant if all its inputs are constants and it succeeds."""
        if not all(child in self._constants for child in children):
            return fn
        try:
            value = fn({})
        except Exception:  # a constant error (1/0) must still only happen at run time
            return fn
        return self._constant(value) if is_immutable(value) else fn

    # -- access ------------------------------------------------------------------------

    def _select(self, node: Select) -> Fn:
        fields: list[str] = []
        head: Expr = node
        while isinstance(head, Select):
            fields.append(head.field)
            head = head.operand
        fields.reverse()
        if isinstance(head, Ident):
            return _chain(head.name, tuple(fields))
        fn = self.compile(head)
        for field in fields:
            fn = self._folded(_select_step(fn, field), fn)
        return fn

    def _index(self, node: Index) -> Fn:
        container = self.compile(node.operand)
        key = self.compile(node.index)

        def index_(a: Mapping[str, Any]) -> Any:
            value = container(a)
            k = key(a)
            tv = type(value)
            if tv is dict and type(k) is str:
                try:
                    return value[k]
                except KeyError:
                    pass
            elif tv is list and type(k) is int and 0 <= k < len(value):
                return value[k]
            return index(value, k)

        return self._folded(index_, container, key)

    def _has(self, node: Has) -> Fn:
        operand = self.compile(node.operand)
        field = node.field

        def has(a: Mapping[str, Any]) -> bool:
            value = operand(a)
            if type(value) is dict:
                return field in value
            return has_field(value, field)

        return has

    # -- calls -------------------------------------------------------------------------

    def _call(self, node: Call) -> Fn:
        args = [self.compile(arg) for arg in node.args]
        if node.target is not None:
            impl = MEMBER_FUNCTIONS[node.function][1]
            args.insert(0, self.compile(node.target))
        else:
            impl = GLOBAL_FUNCTIONS[node.function][1]
        if node.function == "matches" and args[1] in self._constants:
            return self._matches_literal(node, args[0], self._constants[args[1]])
        return self._folded(_apply(impl, args), *args)

    def _matches_literal(self, node: Call, subject: Fn, pattern: Any) -> Fn:
        if type(pattern) is not str:
            return _apply(matches, [subject, self._constant(pattern)])
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise CelCompileError(f"invalid regular expression: {error}", *node.pos) from None

        def matches_literal(a: Mapping[str, Any]) -> bool:
            text = subject(a)
            if type(text) is str:
                return regex.search(text) is not None
            return matches(text, pattern)

        return self._folded(matches_literal, subject)

    # -- aggregates --------------------------------------------------------------------

    def _list(self, node: ListExpr) -> Fn:
        elements = [self.compile(e) for e in node.elements]
        if all(e in self._constants for e in elements):
            values = tuple(self._constants[e] for e in elements)

            def constant_list(a: Mapping[str, Any]) -> list[Any]:
                return list(values)  # a fresh list: callers may mutate what they get

            self._constant_lists[constant_list] = values
            return constant_list

        def list_(a: Mapping[str, Any]) -> list[Any]:
            return [element(a) for element in elements]

        return list_

    def _map(self, node: MapExpr) -> Fn:
        entries = [(self.compile(k), self.compile(v)) for k, v in node.entries]

        def map_(a: Mapping[str, Any]) -> dict[Any, Any]:
            return build_map([(key(a), value(a)) for key, value in entries])

        return map_

    # -- operators ---------------------------------------------------------------------

    def _unary(self, node: Unary) -> Fn:
        operand = self.compile(node.operand)
        if node.op == "!":

            def not_(a: Mapping[str, Any]) -> bool:
                value = operand(a)
                if value is True:
                    return False
                if value is False:
                    return True
                raise no_overload("!_", value)

            return self._folded(not_, operand)

        def neg(a: Mapping[str, Any]) -> Any:
            value = operand(a)
            if type(value) is float:
                return -value
            return negate(value)

        return self._folded(neg, operand)

    def _binary(self, node: Binary) -> Fn:
        op = node.op
        if op in ("&&", "||"):
            operands = [self.compile(n) for n in _flatten(node, op)]
            return and_(operands) if op == "&&" else or_(operands)
        left = self.compile(node.left)
        right = self.compile(node.right)
        if op in ("==", "!="):
            fn = self._equality(op == "!=", left, right)
        elif op in ORDER_OPS:
            fn = self._ordering(op, left, right)
        elif op == "in":
            fn = self._membership(left, right)
        else:
            arith = ARITH_OPS[op]

            def arithmetic(a: Mapping[str, Any]) -> Any:
                return arith(left(a), right(a))

            fn = arithmetic
        return self._folded(fn, left, right)

    def _equality(self, negated: bool, left: Fn, right: Fn) -> Fn:
        if right in self._constants or left in self._constants:
            var, value = (left, right) if right in self._constants else (right, left)
            return equals_constant(var, self._constants[value], negated)

        if negated:

            def not_equal(a: Mapping[str, Any]) -> bool:
                return not cel_eq(left(a), right(a))

            return not_equal

        def equal(a: Mapping[str, Any]) -> bool:
            return cel_eq(left(a), right(a))

        return equal

    def _ordering(self, op: str, left: Fn, right: Fn) -> Fn:
        if right in self._constants and type(self._constants[right]) in (int, float):
            return order_constant(op, left, self._constants[right])
        if left in self._constants and type(self._constants[left]) in (int, float):
            return order_constant(_FLIPPED[op], right, self._constants[left])
        operator = ORDER_OPS[op]

        def ordering(a: Mapping[str, Any]) -> bool:
            x = left(a)
            y = right(a)
            tx = type(x)
            if tx is type(y) and (tx is int or tx is str or (tx is float and x == x and y == y)):
                return operator(x, y)
            return compare(op, x, y)

        return ordering

    def _membership(self, left: Fn, right: Fn) -> Fn:
        values = self._constant_lists.get(right)
        if values is not None and all(type(v) is str for v in values):
            members = frozenset(values)

            def in_strings(a: Mapping[str, Any]) -> bool:
                item = left(a)
                if type(item) is str:
                    return item in members
                return contains(item, values)

            return in_strings

        def in_(a: Mapping[str, Any]) -> bool:
            return contains(left(a), right(a))

        return in_

    def _conditional(self, node: Conditional) -> Fn:
        condition = self.compile(node.condition)
        then = self.compile(node.then)
        otherwise = self.compile(node.otherwise)
        if condition in self._constants and type(self._constants[condition]) is bool:
            return then if self._constants[condition] else otherwise

        def conditional(a: Mapping[str, Any]) -> Any:
            test = condition(a)
            if test is True:
                return then(a)
            if test is False:
                return otherwise(a)
            raise no_overload("_?_:_", test)

        return conditional

    # -- macros ------------------------------------------------------------------------

    def _comprehension(self, node: Comprehension) -> Fn:
        range_ = self.compile(node.range)
        predicate = None if node.predicate is None else self.compile(node.predicate)
        transform = None if node.transform is None else self.compile(node.transform)
        return COMPREHENSIONS[node.kind](node.kind, range_, node.var, predicate, transform)


# -- closure factories (module level, so closures capture only what they use) ---------------


def _ident(name: str) -> Fn:
    def ident(a: Mapping[str, Any]) -> Any:
        try:
            return a[name]
        except KeyError:
            raise _unbound(name) from None

    return ident


def _chain(head: str, fields: tuple[str, ...]) -> Fn:
    """``head.f1.f2...``: plain subscripting, which only maps accept with string keys;
    any failure re-walks the chain to raise the precise error."""

    def walk(a: Mapping[str, Any]) -> Any:
        try:
            value = a[head]
        except KeyError:
            raise _unbound(head) from None
        for field in fields:
            value = value[field] if type(value) is dict and field in value else select(value, field)
        return value

    if len(fields) == 1:
        (f1,) = fields

        def chain1(a: Mapping[str, Any]) -> Any:
            try:
                return a[head][f1]
            except Exception:
                return walk(a)

        return chain1
    if len(fields) == 2:
        f1, f2 = fields

        def chain2(a: Mapping[str, Any]) -> Any:
            try:
                return a[head][f1][f2]
            except Exception:
                return walk(a)

        return chain2

    def chain(a: Mapping[str, Any]) -> Any:
        try:
            value = a[head]
            for field in fields:
                value = value[field]
            return value
        except Exception:
            return walk(a)

    return chain


def _select_step(operand: Fn, field: str) -> Fn:
    def select_(a: Mapping[str, Any]) -> Any:
        value = operand(a)
        if type(value) is dict and field in value:
            return value[field]
        return select(value, field)

    return select_


def _apply(impl: Callable[..., Any], args: list[Fn]) -> Fn:
    if len(args) == 1:
        (x,) = args

        def call1(a: Mapping[str, Any]) -> Any:
            return impl(x(a))

        return call1
    if len(args) == 2:
        x, y = args

        def call2(a: Mapping[str, Any]) -> Any:
            return impl(x(a), y(a))

        return call2

    def call(a: Mapping[str, Any]) -> Any:
        return impl(*[arg(a) for arg in args])

    return call


def _flatten(node: Expr, op: str) -> list[Expr]:
    """The operands of a chain of one logical operator, e.g. ``a && (b && c) && d``."""
    out: list[Expr] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Binary) and current.op == op:
            stack.append(current.right)
            stack.append(current.left)
        else:
            out.append(current)
    return out
