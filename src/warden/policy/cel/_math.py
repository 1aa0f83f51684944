"""The cel-go math extension (``ext.Math``), and Warden's ``sum``, ``min`` and ``max``.

``math.*`` follows cel-go's ``ext/math.go``: ``greatest``/``least`` take numbers of any
numeric type (compared by value, the earlier one winning a tie) or one list of them; the
rounding functions and ``isNaN``/``isInf``/``isFinite`` take doubles only; ``abs`` and
``sign`` keep the numeric type; bit operations work on two ints or two uints with 64-bit
wrap-around, as Go does.

``sum``, ``min`` and ``max`` are Warden's (cel-go has no such globals; Kubernetes' CEL list
library spells them ``list.sum()``, ``list.min()``, ``list.max()``, which work too).
``sum`` adds like ``+`` does, so an int list sums to an int (with overflow errors) and
ints mixed with doubles sum to a double; ``min``/``max`` order values as ``<`` does, so
they accept strings, timestamps and durations as well as numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from warden.policy.cel._values import (
    DURATION,
    INT_MIN,
    NUMERIC,
    ORDERED_TYPES,
    UINT_MAX,
    UInt,
    add,
    compare,
    fail,
    no_overload,
    type_name,
)

_MASK64 = (1 << 64) - 1


# -- greatest / least / min / max -------------------------------------------------------


def _candidates(name: str, args: Sequence[Any]) -> Sequence[Any]:
    """The values to choose from: the arguments, or the elements of a single list."""
    if len(args) == 1 and type_name(args[0]) == "list":
        if not args[0]:
            fail(f"{name}: the list is empty; it needs at least one element")
        items: Sequence[Any] = args[0]
        return items
    return args


def _extreme(name: str, args: Sequence[Any], op: str, kinds: frozenset[str]) -> Any:
    values = _candidates(name, args)
    for value in values:
        if type_name(value) not in kinds:
            raise no_overload(name, value)
    best = values[0]
    for value in values[1:]:
        if compare(op, value, best):  # strict: the earliest of equal values wins
            best = value
    return best


def greatest(*args: Any) -> Any:
    """``math.greatest(1, 2.5)`` is ``2.5``; ``math.greatest([3, 1])`` is ``3``."""
    return _extreme("math.greatest", args, ">", NUMERIC)


def least(*args: Any) -> Any:
    """``math.least(1, 2.5)`` is ``1``; ``math.least([3, 1])`` is ``1``."""
    return _extreme("math.least", args, "<", NUMERIC)


def max_(*args: Any) -> Any:
    """``max(list)`` or ``max(a, b, ...)``, over any values ``<`` orders."""
    return _extreme("max", args, ">", ORDERED_TYPES)


def min_(*args: Any) -> Any:
    """``min(list)`` or ``min(a, b, ...)``, over any values ``<`` orders."""
    return _extreme("min", args, "<", ORDERED_TYPES)


def list_max(items: Any) -> Any:
    """``list.max()`` (Kubernetes' spelling)."""
    if type_name(items) != "list":
        raise no_overload("max", items)
    return _extreme("max", (items,), ">", ORDERED_TYPES)


def list_min(items: Any) -> Any:
    """``list.min()`` (Kubernetes' spelling)."""
    if type_name(items) != "list":
        raise no_overload("min", items)
    return _extreme("min", (items,), "<", ORDERED_TYPES)


def sum_(items: Any) -> Any:
    """``sum([1, 2])`` is ``3``: the elements added with ``+``; ``sum([])`` is ``0``."""
    if type_name(items) != "list":
        raise no_overload("sum", items)
    total: Any = 0
    for position, item in enumerate(items):
        kind = type_name(item)
        if kind not in NUMERIC and kind != DURATION:
            fail(f"sum: element {position} is {kind}; only numbers and durations add up")
        total = item if position == 0 else add(total, item)
    return total


# -- rounding and floating-point tests ----------------------------------------------------


def _double(name: str, value: Any) -> float:
    if type(value) is float:
        return value
    if type_name(value) != "double":
        raise no_overload(name, value)
    return float(value)


def _integral(value: float, rounded: int | float) -> float:
    """``rounded`` as a double, keeping infinities, NaN and the sign of a zero (as Go)."""
    result = float(rounded)
    return math.copysign(result, value) if result == 0 else result


def ceil(value: Any) -> float:
    x = _double("math.ceil", value)
    return _integral(x, math.ceil(x)) if math.isfinite(x) else x


def floor(value: Any) -> float:
    x = _double("math.floor", value)
    return _integral(x, math.floor(x)) if math.isfinite(x) else x


def trunc(value: Any) -> float:
    x = _double("math.trunc", value)
    return _integral(x, math.trunc(x)) if math.isfinite(x) else x


def round_(value: Any) -> float:
    """Half away from zero, as Go's ``math.Round`` (Python's ``round`` goes to even)."""
    x = _double("math.round", value)
    if not math.isfinite(x):
        return x
    whole = math.trunc(x)
    if abs(x - whole) >= 0.5:  # exact: x - trunc(x) is representable
        whole += 1 if x > 0 else -1
    return _integral(x, whole)


def is_inf(value: Any) -> bool:
    return math.isinf(_double("math.isInf", value))


def is_nan(value: Any) -> bool:
    return math.isnan(_double("math.isNaN", value))


def is_finite(value: Any) -> bool:
    return math.isfinite(_double("math.isFinite", value))


# -- sign and magnitude -------------------------------------------------------------------


def abs_(value: Any) -> Any:
    kind = type_name(value)
    if kind == "int":
        if value == INT_MIN:
            fail("math.abs: int overflow (the absolute value of -9223372036854775808)")
        return abs(int(value))
    if kind == "uint":
        return value
    if kind == "double":
        return abs(float(value))
    raise no_overload("math.abs", value)


def sign(value: Any) -> Any:
    kind = type_name(value)
    if kind == "int":
        return (value > 0) - (value < 0)
    if kind == "uint":
        return UInt(1 if value else 0)
    if kind == "double":
        x = float(value)
        if x != x:
            return x
        return 1.0 if x > 0 else -1.0 if x < 0 else 0.0
    raise no_overload("math.sign", value)


def sqrt(value: Any) -> float:
    """The square root as a double; NaN for a negative number, as Go's ``math.Sqrt``."""
    if type_name(value) not in NUMERIC:
        raise no_overload("math.sqrt", value)
    x = float(value)
    return math.sqrt(x) if x >= 0 or x != x else math.nan


# -- bits ---------------------------------------------------------------------------------


def _signed(bits: int) -> int:
    bits &= _MASK64
    return bits - (1 << 64) if bits >> 63 else bits


def _bit_pair(name: str, a: Any, b: Any) -> tuple[int, int, bool]:
    """Both operands as Python ints, and whether they are uints (mixed types fail)."""
    ka, kb = type_name(a), type_name(b)
    if ka != kb or ka not in ("int", "uint"):
        raise no_overload(name, a, b)
    return int(a), int(b), ka == "uint"


def _bit_result(bits: int, unsigned: bool) -> int:
    return UInt(bits & UINT_MAX) if unsigned else _signed(bits)


def bit_and(a: Any, b: Any) -> int:
    x, y, unsigned = _bit_pair("math.bitAnd", a, b)
    return _bit_result(x & y, unsigned)


def bit_or(a: Any, b: Any) -> int:
    x, y, unsigned = _bit_pair("math.bitOr", a, b)
    return _bit_result(x | y, unsigned)


def bit_xor(a: Any, b: Any) -> int:
    x, y, unsigned = _bit_pair("math.bitXor", a, b)
    return _bit_result(x ^ y, unsigned)


def bit_not(a: Any) -> int:
    kind = type_name(a)
    if kind not in ("int", "uint"):
        raise no_overload("math.bitNot", a)
    return _bit_result(~int(a), kind == "uint")


def _shift(name: str, value: Any, bits: Any) -> tuple[int, int, bool]:
    kind = type_name(value)
    if kind not in ("int", "uint") or type_name(bits) != "int":
        raise no_overload(name, value, bits)
    if bits < 0:
        fail(f"{name}: negative shift offset: {bits}")
    return int(value), int(bits), kind == "uint"


def bit_shift_left(value: Any, bits: Any) -> int:
    """Bits shifted out are lost; a shift by 64 or more gives 0."""
    x, n, unsigned = _shift("math.bitShiftLeft", value, bits)
    return _bit_result(x << n if n < 64 else 0, unsigned)


def bit_shift_right(value: Any, bits: Any) -> int:
    """A logical shift: the vacated high bits are 0, for ints too."""
    x, n, unsigned = _shift("math.bitShiftRight", value, bits)
    return _bit_result((x & _MASK64) >> n if n < 64 else 0, unsigned)
