"""CEL's standard functions (``size``, conversions, string tests, time) as Python callables,
and the registry of every function, standard or extension, by name.

Two tables, by call style: ``GLOBAL_FUNCTIONS`` for ``f(x, ...)`` and ``MEMBER_FUNCTIONS``
for ``x.f(...)`` (the receiver is passed first). Namespaced functions (``math.ceil``) are
global entries with a dotted name; the checker resolves ``math.ceil(x)``, which parses as
a method call on ``math``, to them. Each entry lists the accepted argument counts, so the
checker can reject a bad call before anything runs; the compiler binds the implementation
once, so a function costs nothing to expressions that do not call it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from warden.policy.cel import _lists, _math, _strings, _time
from warden.policy.cel._values import (
    DURATION,
    INT_MAX,
    INT_MIN,
    TIMESTAMP,
    UINT_MAX,
    CelType,
    UInt,
    fail,
    no_overload,
    size,
    type_name,
)

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_UINT_TEXT = re.compile(r"[0-9]+")
_DOUBLE_TEXT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)
_BOOL_TEXT = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}  # fmt: skip
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def to_int(value: Any) -> int:
    kind = type_name(value)
    if kind in ("int", "uint"):
        number = int(value)
    elif kind == "double":
        number = _truncate(float(value), "int")
    elif kind == "string":
        if not _INT_TEXT.fullmatch(value):
            fail(f"cannot convert {value!r} to int")
        number = int(value)
    elif kind == TIMESTAMP:
        number = _time.to_seconds(value)
    else:
        raise no_overload("int", value)
    if INT_MIN <= number <= INT_MAX:
        return number
    fail("int conversion out of range")


def to_uint(value: Any) -> UInt:
    kind = type_name(value)
    if kind in ("int", "uint"):
        number = int(value)
    elif kind == "double":
        number = _truncate(float(value), "uint")
    elif kind == "string":
        if not _UINT_TEXT.fullmatch(value):
            fail(f"cannot convert {value!r} to uint")
        number = int(value)
    else:
        raise no_overload("uint", value)
    if 0 <= number <= UINT_MAX:
        return UInt(number)
    fail("uint conversion out of range")


def _truncate(number: float, target: str) -> int:
    if number != number or number in (float("inf"), float("-inf")):
        fail(f"cannot convert {number} to {target}")
    # Like cel-go: no negative double converts to uint (even one truncating to 0), and the
    # double -2**63 counts as out of the int range. Callers check the upper bounds.
    if (target == "uint" and number < 0) or (target == "int" and number <= -(2.0**63)):
        fail(f"cannot convert {number} to {target}")
    return int(number)


def to_double(value: Any) -> float:
    kind = type_name(value)
    if kind in ("int", "uint", "double"):
        return float(value)
    if kind == "string":
        if not _DOUBLE_TEXT.fullmatch(value):
            fail(f"cannot convert {value!r} to double")
        return float(value)
    raise no_overload("double", value)


def to_string(value: Any) -> str:
    kind = type_name(value)
    if kind == "string":
        return str(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind in ("int", "uint"):
        return str(int(value))
    if kind == "double":
        return format_double(float(value))
    if kind == "bytes":
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            fail("bytes are not valid UTF-8")
    if kind == TIMESTAMP:
        return _time.format_timestamp(value)
    if kind == DURATION:
        return _time.format_duration(value)
    if kind == "type":
        return str(value)
    raise no_overload("string", value)


def format_double(number: float) -> str:
    """Format like Go's ``%g`` (shortest round-trip digits), which cel-go's ``string()`` uses:
    exponent form below 1e-4 and from 1e6 up, e.g. ``1e+06``, ``0.0001``, ``123456``."""
    if number != number:
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "+Inf" if number > 0 else "-Inf"
    sign = "-" if str(number).startswith("-") else ""
    if number == 0:
        return sign + "0"
    # repr() gives the shortest digits that round-trip; Decimal exposes them.
    _, digit_tuple, exponent = Decimal(repr(abs(number))).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    point = len(digit_tuple) + exponent  # position of the decimal point within digits
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def to_bool(value: Any) -> bool:
    kind = type_name(value)
    if kind == "bool":
        return bool(value)
    if kind == "string":
        if value in _BOOL_TEXT:
            return _BOOL_TEXT[value]
        fail(f"cannot convert {value!r} to bool")
    raise no_overload("bool", value)


def to_bytes(value: Any) -> bytes:
    kind = type_name(value)
    if kind == "bytes":
        return bytes(value)
    if kind == "string":
        return str(value).encode("utf-8")
    raise no_overload("bytes", value)


def type_of(value: Any) -> CelType:
    return CelType(type_name(value))


def dyn(value: Any) -> Any:
    return value


def to_duration(value: Any) -> timedelta:
    if type_name(value) == "string":
        return _time.parse_duration(value)
    if isinstance(value, timedelta):
        return value
    raise no_overload("duration", value)


def to_timestamp(value: Any) -> datetime:
    kind = type_name(value)
    if kind == "string":
        return _time.parse_timestamp(value)
    if kind == "int":
        return _time.timestamp_from_seconds(int(value))
    if isinstance(value, datetime):
        return value
    raise no_overload("timestamp", value)


def _string_test(name: str, test: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    def run(text: Any, part: Any) -> bool:
        if type(text) is str and type(part) is str:
            return test(text, part)
        if type_name(text) != "string" or type_name(part) != "string":
            raise no_overload(name, text, part)
        return test(text, part)

    return run


contains = _string_test("contains", lambda text, part: part in text)
starts_with = _string_test("startsWith", str.startswith)
ends_with = _string_test("endsWith", str.endswith)


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern with Python's ``re`` (the common subset behaves the same)."""
    try:
        return re.compile(pattern)
    except re.error as error:
        fail(f"invalid regular expression {pattern!r}: {error}")


def matches(text: Any, pattern: Any) -> bool:
    if type_name(text) != "string" or type_name(pattern) != "string":
        raise no_overload("matches", text, pattern)
    return compile_regex(pattern).search(text) is not None


def lower_ascii(text: Any) -> str:
    if type_name(text) != "string":
        raise no_overload("lowerAscii", text)
    return str(text).translate(_ASCII_LOWER)


def upper_ascii(text: Any) -> str:
    if type_name(text) != "string":
        raise no_overload("upperAscii", text)
    return str(text).translate(_ASCII_UPPER)


# Accepted argument counts: a set, or a range for variadic functions.
Arity = frozenset[int] | range
ONE_OR_MORE: Arity = range(1, 1 << 31)
# name -> (accepted argument counts, implementation)
FunctionTable = dict[str, tuple[Arity, Callable[..., Any]]]

_ONE = frozenset({1})
_TWO = frozenset({2})

GLOBAL_FUNCTIONS: FunctionTable = {
    "size": (frozenset({1}), size),
    "int": (frozenset({1}), to_int),
    "uint": (frozenset({1}), to_uint),
    "double": (frozenset({1}), to_double),
    "string": (frozenset({1}), to_string),
    "bool": (frozenset({1}), to_bool),
    "bytes": (frozenset({1}), to_bytes),
    "type": (frozenset({1}), type_of),
    "dyn": (frozenset({1}), dyn),
    "matches": (frozenset({2}), matches),
    "duration": (frozenset({1}), to_duration),
    "timestamp": (frozenset({1}), to_timestamp),
    # Warden's aggregates (see _math)
    "sum": (_ONE, _math.sum_),
    "min": (ONE_OR_MORE, _math.min_),
    "max": (ONE_OR_MORE, _math.max_),
    # cel-go ext.Math
    "math.greatest": (ONE_OR_MORE, _math.greatest),
    "math.least": (ONE_OR_MORE, _math.least),
    "math.ceil": (_ONE, _math.ceil),
    "math.floor": (_ONE, _math.floor),
    "math.round": (_ONE, _math.round_),
    "math.trunc": (_ONE, _math.trunc),
    "math.abs": (_ONE, _math.abs_),
    "math.sign": (_ONE, _math.sign),
    "math.isInf": (_ONE, _math.is_inf),
    "math.isNaN": (_ONE, _math.is_nan),
    "math.isFinite": (_ONE, _math.is_finite),
    "math.sqrt": (_ONE, _math.sqrt),
    "math.bitAnd": (_TWO, _math.bit_and),
    "math.bitOr": (_TWO, _math.bit_or),
    "math.bitXor": (_TWO, _math.bit_xor),
    "math.bitNot": (_ONE, _math.bit_not),
    "math.bitShiftLeft": (_TWO, _math.bit_shift_left),
    "math.bitShiftRight": (_TWO, _math.bit_shift_right),
    # cel-go ext.Strings, ext.Lists, ext.Sets
    "strings.quote": (_ONE, _strings.quote),
    "lists.range": (_ONE, _lists.lists_range),
    "sets.contains": (_TWO, _lists.sets_contains),
    "sets.equivalent": (_TWO, _lists.sets_equivalent),
    "sets.intersects": (_TWO, _lists.sets_intersects),
}

#: The prefixes of the namespaced functions above.
NAMESPACES = frozenset(name.split(".")[0] for name in GLOBAL_FUNCTIONS if "." in name)

MEMBER_FUNCTIONS: FunctionTable = {
    "size": (frozenset({0}), size),
    "contains": (frozenset({1}), contains),
    "startsWith": (frozenset({1}), starts_with),
    "endsWith": (frozenset({1}), ends_with),
    "matches": (frozenset({1}), matches),
    "lowerAscii": (frozenset({0}), lower_ascii),
    "upperAscii": (frozenset({0}), upper_ascii),
    **{name: (frozenset({0, 1}), getter) for name, getter in _time.GETTERS.items()},
    # cel-go ext.Strings
    "charAt": (_ONE, _strings.char_at),
    "indexOf": (frozenset({1, 2}), _strings.index_of),
    "lastIndexOf": (frozenset({1, 2}), _strings.last_index_of),
    "replace": (frozenset({2, 3}), _strings.replace),
    "split": (frozenset({1, 2}), _strings.split),
    "substring": (frozenset({1, 2}), _strings.substring),
    "trim": (frozenset({0}), _strings.trim),
    "join": (frozenset({0, 1}), _strings.join),
    "reverse": (frozenset({0}), _lists.reverse),  # strings and lists
    # cel-go ext.Lists (sortBy is a macro: see _checker)
    "slice": (_TWO, _lists.slice_),
    "flatten": (frozenset({0, 1}), _lists.flatten),
    "distinct": (frozenset({0}), _lists.distinct),
    "sort": (frozenset({0}), _lists.sort),
    # Kubernetes' spelling of Warden's aggregates
    "sum": (frozenset({0}), _math.sum_),
    "min": (frozenset({0}), _math.list_min),
    "max": (frozenset({0}), _math.list_max),
}
