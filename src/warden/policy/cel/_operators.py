"""Closures for CEL's logical and comparison operators, the hottest paths of evaluation.

``&&``/``||`` implement CEL's commutative error absorption (an error on one side is
ignored when the other side decides the result). Comparisons against a literal inline the
type check for the common case and defer to the general operator in ``_values`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from warden.policy.cel._values import cel_eq, compare, no_overload

Fn = Callable[[Mapping[str, Any]], Any]


def and_(operands: list[Fn]) -> Fn:
    """CEL ``&&``: false wins over errors on either side; otherwise errors propagate."""
    if len(operands) == 2:
        left, right = operands

        def and2(a: Mapping[str, Any]) -> bool:
            try:
                x = left(a)
            except Exception as error:
                return _settle(error, right, a, False)
            if x is True:
                y = right(a)
                if y is True or y is False:
                    return y
                raise no_overload("_&&_", y)
            if x is False:
                return False
            return _settle(no_overload("_&&_", x), right, a, False)

        return and2
    return _logical(operands, False, "_&&_")


def or_(operands: list[Fn]) -> Fn:
    """CEL ``||``: true wins over errors on either side; otherwise errors propagate."""
    if len(operands) == 2:
        left, right = operands

        def or2(a: Mapping[str, Any]) -> bool:
            try:
                x = left(a)
            except Exception as error:
                return _settle(error, right, a, True)
            if x is False:
                y = right(a)
                if y is True or y is False:
                    return y
                raise no_overload("_||_", y)
            if x is True:
                return True
            return _settle(no_overload("_||_", x), right, a, True)

        return or2
    return _logical(operands, True, "_||_")


def _settle(error: Exception, right: Fn, a: Mapping[str, Any], decisive: bool) -> bool:
    """The left operand failed: only a decisive right operand can absorb the error."""
    outcome = right(a)
    if outcome is True or outcome is False:
        if outcome == decisive:
            return outcome
    raise error


def _logical(operands: list[Fn], decisive: bool, name: str) -> Fn:
    # Separate names: mypy would narrow ``decisive`` to Any after ``x is decisive``.
    win, other = decisive, not decisive

    def logical(a: Mapping[str, Any]) -> bool:
        error: Exception | None = None
        for operand in operands:
            try:
                x = operand(a)
            except Exception as failure:
                error = failure
                continue
            if x is decisive:
                return win
            if x is not other:
                error = no_overload(name, x)
        if error is not None:
            raise error
        return other

    return logical


def equals_constant(var: Fn, value: Any, negated: bool) -> Fn:
    if type(value) is str:
        # A str only ever equals a str, so Python's == is CEL's here.
        if negated:
            return lambda a: var(a) != value
        return lambda a: var(a) == value
    value_type = type(value)

    def equals(a: Mapping[str, Any]) -> bool:
        x = var(a)
        if type(x) is value_type:
            return bool(x == value)
        return cel_eq(x, value)

    if negated:
        return lambda a: not equals(a)
    return equals


def order_constant(op: str, var: Fn, value: float) -> Fn:
    """``var <op> value`` for a numeric literal, with inline fast paths for int and float.

    An int compares exactly with an int literal; anything against a double compares as
    doubles (lossily, as the spec does); NaN and other types take the general path,
    which raises.
    """
    if value != value:
        return lambda a: compare(op, var(a), value)
    if type(value) is int:
        return _order_int_constant(op, var, value, float(value))
    return _order_float_constant(op, var, value)


def _order_int_constant(op: str, var: Fn, value: int, as_float: float) -> Fn:
    if op == "<":

        def lt(a: Mapping[str, Any]) -> bool:
            x = var(a)
            tx = type(x)
            if tx is int:
                return bool(x < value)
            if tx is float and x == x:
                return bool(x < as_float)
            return compare("<", x, value)

        return lt
    if op == "<=":

        def le(a: Mapping[str, Any]) -> bool:
            x = var(a)
            tx = type(x)
            if tx is int:
                return bool(x <= value)
            if tx is float and x == x:
                return bool(x <= as_float)
            return compare("<=", x, value)

        return le
    if op == ">":

        def gt(a: Mapping[str, Any]) -> bool:
            x = var(a)
            tx = type(x)
            if tx is int:
                return bool(x > value)
            if tx is float and x == x:
                return bool(x > as_float)
            return compare(">", x, value)

        return gt

    def ge(a: Mapping[str, Any]) -> bool:
        x = var(a)
        tx = type(x)
        if tx is int:
            return bool(x >= value)
        if tx is float and x == x:
            return bool(x >= as_float)
        return compare(">=", x, value)

    return ge


def _order_float_constant(op: str, var: Fn, value: float) -> Fn:
    if op == "<":

        def lt(a: Mapping[str, Any]) -> bool:
            x = var(a)
            tx = type(x)
            if (tx is float and x == x) or tx is int:
                return float(x) < value
            return compare("<", x, value)

        return lt
    if op == "<=":

        def le(a: Mapping[str, Any]) -> bool:
            x = var(a)
            tx = type(x)
            if (tx is float and x == x) or tx is int:
                return float(x) <= value
            return compare("<=", x, value)

        return le
    if op == ">":

        def gt(a: Mapping[str, Any]) -> bool:
            x = var(a)
            tx = type(x)
            if (tx is float and x == x) or tx is int:
                return float(x) > value
            return compare(">", x, value)

        return gt

    def ge(a: Mapping[str, Any]) -> bool:
        x = var(a)
        tx = type(x)
        if (tx is float and x == x) or tx is int:
            return float(x) >= value
        return compare(">=", x, value)

    return ge
