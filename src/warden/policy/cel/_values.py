"""CEL runtime values over plain Python data, and the operators' semantics on them.

Activation values are plain Python (dict, list/tuple, str, bytes, int, float, bool, None,
Decimal), so the CEL type of a value is read off its Python type. Two CEL types have no
Python counterpart and get one here: ``uint`` (``UInt``, an ``int`` subclass so it hashes
and compares like the equal ``int``, which is what CEL's heterogeneous equality and map
lookups want) and type values (``CelType``). Timestamps and durations are ``datetime`` and
``timedelta``.

Every function here raises ``CelEvalError`` for CEL runtime errors; Python's ``bool`` is
never treated as a number.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn

from warden.errors import CelEvalError

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1
UINT_MAX = (1 << 64) - 1


class UInt(int):
    """A CEL ``uint`` value (``1u``): an ``int`` that remembers it is unsigned."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"UInt({int(self)})"


@dataclass(frozen=True, slots=True)
class CelType:
    """A CEL type value, as returned by ``type(x)`` and denoted by ``int``, ``string``, ..."""

    name: str

    def __str__(self) -> str:
        return self.name


TIMESTAMP = "google.protobuf.Timestamp"
DURATION = "google.protobuf.Duration"
TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)

_EXACT_TYPE_NAMES: dict[type, str] = {
    bool: "bool",
    UInt: "uint",
    int: "int",
    float: "double",
    Decimal: "double",
    str: "string",
    bytes: "bytes",
    list: "list",
    tuple: "list",
    dict: "map",
    type(None): "null_type",
    CelType: "type",
    datetime: TIMESTAMP,
    timedelta: DURATION,
}
NUMERIC = frozenset({"int", "uint", "double"})
_ORDERED = frozenset({"string", "bytes", "bool", TIMESTAMP, DURATION})
#: The types ``<`` orders: numbers (across numeric types) and the same-type orderables.
ORDERED_TYPES = NUMERIC | _ORDERED
# Types whose Python ``==`` is already CEL equality when both sides have that exact type.
_PLAIN_EQ = frozenset({str, int, float, bool, bytes, UInt, type(None), CelType})


def type_name(value: object) -> str:
    """The CEL type name of ``value`` (``"int"``, ``"map"``, ...)."""
    name = _EXACT_TYPE_NAMES.get(type(value))
    if name is not None:
        return name
    # Subclasses (IntEnum, StrEnum, OrderedDict, ...) take the CEL type of their base.
    for base, base_name in _EXACT_TYPE_NAMES.items():
        if isinstance(value, base):
            return base_name
    if isinstance(value, Mapping):
        return "map"
    return type(value).__name__


def fail(message: str) -> NoReturn:
    raise CelEvalError(message)


def no_overload(op: str, *args: object) -> CelEvalError:
    kinds = ", ".join(type_name(a) for a in args)
    return CelEvalError(f"no such overload: {op}({kinds})")


def as_number(value: Any) -> Any:
    """The Python number to compute with: Decimal stands in for double."""
    return float(value) if isinstance(value, Decimal) else value


def _numbers(na: str, a: Any, nb: str, b: Any) -> tuple[Any, Any]:
    """Two numbers of any CEL numeric types, ready to compare in Python.

    Against a double, the other side is converted to double, lossily, as cel-go and the
    conformance tests do (``9223372036854775807 < 9223372036854775808.0`` is false); int
    and uint compare exactly.
    """
    if na == "double" or nb == "double":
        return float(a), float(b)
    return int(a), int(b)


# -- equality -------------------------------------------------------------------------


def cel_eq(a: Any, b: Any) -> bool:
    """CEL heterogeneous equality: different types are unequal, numbers compare by value."""
    ta = type(a)
    if ta is type(b) and ta in _PLAIN_EQ:
        return bool(a == b)
    return _eq_slow(a, b)


def _eq_slow(a: Any, b: Any) -> bool:
    na, nb = type_name(a), type_name(b)
    if na in NUMERIC and nb in NUMERIC:
        x, y = _numbers(na, a, nb, b)
        return bool(x == y)
    if na != nb:
        return False
    if na == "list":
        return len(a) == len(b) and all(cel_eq(x, y) for x, y in zip(a, b, strict=True))
    if na == "map":
        if len(a) != len(b):
            return False
        for key, value in a.items():
            found, other = map_find(b, key)
            if not found or not cel_eq(value, other):
                return False
        return True
    return bool(a == b)


# -- maps -----------------------------------------------------------------------------


def map_find(mapping: Mapping[Any, Any], key: Any) -> tuple[bool, Any]:
    """Look ``key`` up with CEL key semantics: numeric keys match across int/uint/double,
    bool keys never match numbers (Python dicts would conflate ``True`` and ``1``)."""
    if type(key) is str:
        try:
            return True, mapping[key]
        except KeyError:
            return False, None
    kind = type_name(key)
    if kind == "string":
        return map_find(mapping, str(key))
    if kind == "bool":
        for stored, value in mapping.items():
            if isinstance(stored, bool) and stored == key:
                return True, value
        return False, None
    if kind in NUMERIC:
        number = as_number(key)
        try:
            value = mapping[number]
        except (KeyError, TypeError):
            return False, None
        if number == 0 or number == 1:
            # The hit may be a bool key that Python equates with 0/1.
            if not any(type_name(k) in NUMERIC and k == number for k in mapping):
                return False, None
        return True, value
    raise CelEvalError(f"unsupported map key type: {kind}")


def check_map_key(key: Any) -> Any:
    """Validate a key for a map under construction (int, uint, bool or string only)."""
    kind = type_name(key)
    if kind not in ("string", "int", "uint", "bool"):
        fail(f"unsupported map key type: {kind}")
    return key


def build_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    kinds: dict[Any, str] = {}
    for key, value in pairs:
        kind = type_name(check_map_key(key))
        if key in result:
            if (kinds[key] == "bool") != (kind == "bool"):
                fail(f"map literal cannot hold both a bool key and an equal number key ({key!r})")
            fail(f"repeated key in map literal: {key!r}")
        result[key] = value
        kinds[key] = kind
    return result


# -- selection and indexing ----------------------------------------------------------


def select(value: Any, field: str) -> Any:
    if isinstance(value, Mapping):
        try:
            return value[field]
        except KeyError:
            fail(f"no such key: {field}")
    fail(f"type '{type_name(value)}' does not support field selection (.{field})")


def has_field(value: Any, field: str) -> bool:
    if isinstance(value, Mapping):
        return field in value
    fail(f"has() on type '{type_name(value)}' (.{field})")


def index(container: Any, key: Any) -> Any:
    kind = type_name(container)
    if kind == "list":
        position = _list_position(key)
        if 0 <= position < len(container):
            return container[position]
        fail(f"index out of range: {position}")
    if kind == "map":
        found, value = map_find(container, key)
        if found:
            return value
        fail(f"no such key: {key!r}")
    raise no_overload("_[_]", container, key)


def _list_position(key: Any) -> int:
    kind = type_name(key)
    if kind in ("int", "uint"):
        return int(key)
    if kind == "double":
        number = as_number(key)
        # Spec: a double index is allowed when it denotes an integer exactly.
        if math.isfinite(number) and number == int(number):
            return int(number)
        fail(f"list index is not an integer: {number!r}")
    fail(f"list index must be int, not {kind}")


def contains(item: Any, container: Any) -> bool:
    """The ``in`` operator: list membership by CEL equality, or map key membership."""
    kind = type_name(container)
    if kind == "list":
        if type(item) is str:
            return item in container
        return any(cel_eq(item, element) for element in container)
    if kind == "map":
        return map_find(container, item)[0]
    raise no_overload("@in", item, container)


def size(value: Any) -> int:
    kind = type(value)
    if kind is str or kind is list or kind is dict or kind is bytes or kind is tuple:
        return len(value)
    if type_name(value) in ("string", "bytes", "list", "map"):
        return len(value)
    raise no_overload("size", value)


# -- ordering ------------------------------------------------------------------------

ORDER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def compare(op: str, a: Any, b: Any) -> bool:
    na, nb = type_name(a), type_name(b)
    if na in NUMERIC and nb in NUMERIC:
        x, y = _numbers(na, a, nb, b)
        if x != x or y != y:
            fail("NaN values cannot be ordered")
        return ORDER_OPS[op](x, y)
    if na == nb and na in _ORDERED:
        return ORDER_OPS[op](a, b)
    raise no_overload(f"_{op}_", a, b)


# -- arithmetic ----------------------------------------------------------------------


def check_int(value: int, op: str) -> int:
    if INT_MIN <= value <= INT_MAX:
        return value
    fail(f"int overflow in {op}")


def check_uint(value: int, op: str) -> UInt:
    if 0 <= value <= UINT_MAX:
        return UInt(value)
    fail(f"uint overflow in {op}")


def _int_div(a: int, b: int) -> int:
    if b == 0:
        fail("division by zero")
    # Truncate toward zero (Go/C), not Python's floor.
    quotient = abs(a) // abs(b)
    return -quotient if (a < 0) != (b < 0) else quotient


def _int_mod(a: int, b: int) -> int:
    if b == 0:
        fail("modulus by zero")
    # The remainder takes the sign of the dividend (Go/C), not Python's floor semantics.
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


def _float_div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        # IEEE 754, as CEL doubles require: x/0 is ±inf, 0/0 and nan/0 are nan.
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


_INT_OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _int_div,
    "%": _int_mod,
}
_FLOAT_OPS: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _float_div,
}


def arith(op: str, a: Any, b: Any) -> Any:
    """``+ - * / %`` on any operands; the fast paths for common types live in the compiler."""
    na, nb = type_name(a), type_name(b)
    if na == nb:
        if na == "int":
            if op == "%" and a == INT_MIN and b == -1:
                fail("int overflow in %")  # as in cel-go, though the remainder (0) fits
            return check_int(_INT_OPS[op](int(a), int(b)), op)
        if na == "uint":
            return check_uint(_INT_OPS[op](int(a), int(b)), op)
        if na == "double" and op in _FLOAT_OPS:
            return _FLOAT_OPS[op](float(a), float(b))
        if op == "+":
            if na == "string":
                return str(a) + str(b)
            if na == "bytes":
                return bytes(a) + bytes(b)
            if na == "list":
                return [*a, *b]
    # Documented deviation: int (or uint) mixed with double computes in double.
    if na in NUMERIC and nb in NUMERIC and "double" in (na, nb) and op in _FLOAT_OPS:
        return _FLOAT_OPS[op](float(a), float(b))
    if TIMESTAMP in (na, nb) or DURATION in (na, nb):
        from warden.policy.cel import _time  # deferred: time support is rarely used

        return _time.arith(op, a, b)
    raise no_overload(f"_{op}_", a, b)


def add(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        result = a + b
        if INT_MIN <= result <= INT_MAX:
            return result
        fail("int overflow in +")
    if (ta is float and (tb is float or tb is int)) or (ta is int and tb is float):
        return a + b  # int with double: the documented promotion to double
    if ta is str and tb is str:
        return a + b
    return arith("+", a, b)


def sub(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        result = a - b
        if INT_MIN <= result <= INT_MAX:
            return result
        fail("int overflow in -")
    if (ta is float and (tb is float or tb is int)) or (ta is int and tb is float):
        return a - b
    return arith("-", a, b)


def mul(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        result = a * b
        if INT_MIN <= result <= INT_MAX:
            return result
        fail("int overflow in *")
    if (ta is float and (tb is float or tb is int)) or (ta is int and tb is float):
        return a * b
    return arith("*", a, b)


def div(a: Any, b: Any) -> Any:
    return arith("/", a, b)


def mod(a: Any, b: Any) -> Any:
    return arith("%", a, b)


ARITH_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": add,
    "-": sub,
    "*": mul,
    "/": div,
    "%": mod,
}


def negate(value: Any) -> Any:
    kind = type_name(value)
    if kind == "int":
        return check_int(-int(value), "unary -")
    if kind == "double":
        return -float(value)
    if kind == DURATION:
        from warden.policy.cel import _time

        return _time.negate(value)
    raise no_overload("-_", value)


def logical_not(value: Any) -> bool:
    if value is True:
        return False
    if value is False:
        return True
    raise no_overload("!_", value)


def is_immutable(value: Any) -> bool:
    """Whether a constant can be shared between evaluations without copying."""
    return type(value) in _PLAIN_EQ or isinstance(value, datetime | timedelta)
