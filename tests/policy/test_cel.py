"""Unit tests of the CEL compiler: language features, errors, and static analysis."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from warden.errors import CelCompileError, CelEvalError, CelSyntaxError
from warden.policy.cel import CelType, CompiledExpression, UInt, compile_expression

ROOTS = frozenset({"tool", "args", "window", "facts", "x", "y", "m", "l", "s"})

CONTEXT: dict[str, Any] = {
    "tool": {"name": "issue_refund"},
    "args": {
        "amount": 150.0,
        "count": 3,
        "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 0}],
        "note": "Damaged in transit",
        "nested": {"deep": {"x": 1}},
        "none": None,
    },
    "window": {"refunds_24h": 3, "refund_total": 400},
    "facts": {"order": {"payment_method": "card"}},
}


def compile_(source: str) -> CompiledExpression:
    return compile_expression(source, roots=ROOTS)


def ev(source: str, **activation: Any) -> Any:
    return compile_(source).evaluate({**CONTEXT, **activation})


def same(actual: Any, expected: Any) -> bool:
    """Equal in value *and* CEL type: 1, 1u, 1.0 and true are all different here."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(map(same, actual, expected))
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            same(actual[k], expected[k]) for k in expected
        )
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(actual)
    return bool(actual == expected)


def check(source: str, expected: Any, **activation: Any) -> None:
    result = ev(source, **activation)
    assert same(result, expected), f"{source!r} gave {result!r}, expected {expected!r}"


def fails(source: str, match: str | None = None, **activation: Any) -> CelEvalError:
    with pytest.raises(CelEvalError, match=match) as info:
        ev(source, **activation)
    return info.value


# -- literals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("42", 42),
        ("0x1F", 31),
        ("0x1fu", UInt(31)),
        ("7u", UInt(7)),
        ("7U", UInt(7)),
        ("18446744073709551615u", UInt(18446744073709551615)),
        ("-9223372036854775808", -9223372036854775808),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        (".5", 0.5),
        ("true", True),
        ("false", False),
        ("null", None),
        ("'single'", "single"),
        ('"double"', "double"),
        ("'''tri'ple'''", "tri'ple"),
        ('"""multi\nline"""', "multi\nline"),
        ("r'\\d+\\n'", "\\d+\\n"),
        ("R'''\\x'''", "\\x"),
        ("'\\a\\b\\f\\n\\r\\t\\v\\\\\\?\\\"\\'\\`'", "\a\b\f\n\r\t\v\\?\"'`"),
        ("'\\x41\\X42\\103\\u00e9\\U0001F600'", "ABCé😀"),
        ("'\\303\\277'", "Ã¿"),
        ("b'abc'", b"abc"),
        ("b'ÿ'", b"\xc3\xbf"),
        ("b'\\303\\277'", b"\xc3\xbf"),
        ("b'\\377\\xff'", b"\xff\xff"),
        ("br'\\n'", b"\\n"),
        ("[]", []),
        ("[1, 'a', true, null, 2u]", [1, "a", True, None, UInt(2)]),
        ("[1, 2,]", [1, 2]),
        ("{}", {}),
        ("{'a': 1, 'b': [2.0],}", {"a": 1, "b": [2.0]}),
        ("{1: 'i', 2u: 'u', 'k': 's'}", {1: "i", UInt(2): "u", "k": "s"}),
        ("{true: 'b'}", {True: "b"}),
        ("// comment\n1 // trailing comment", 1),
    ],
)
def test_literals(source: str, expected: Any) -> None:
    check(source, expected)


def test_list_literal_results_are_fresh() -> None:
    expr = compile_("[1, 2]")
    first = expr.evaluate({})
    first.append(3)
    assert expr.evaluate({}) == [1, 2]


@pytest.mark.parametrize(
    "source",
    ["9223372036854775808", "-(9223372036854775808)", "18446744073709551616u", "1e400"],
)
def test_out_of_range_literals_do_not_parse(source: str) -> None:
    with pytest.raises(CelSyntaxError, match="out of range"):
        compile_(source)


@pytest.mark.parametrize(
    ("source", "column"),
    [("'\\z'", 2), ("b'\\u00e9'", 3), ("'\\ud800'", 2), ("x + 'ok\\q'", 8)],
)
def test_bad_escapes_are_syntax_errors_at_the_escape(source: str, column: int) -> None:
    with pytest.raises(CelSyntaxError) as info:
        compile_(source)
    assert (info.value.line, info.value.column) == (1, column)


def test_map_literal_key_rules() -> None:
    fails("{'a': 1, 'a': 2}", "repeated key")
    fails("{1: 'a', 1u: 'b'}", "repeated key")
    fails("{1.5: 'a'}", "unsupported map key type: double")
    fails("{null: 1}", "unsupported map key type")
    # Documented deviation: a Python dict cannot keep true and 1 apart.
    fails("{1: 'a', true: 'b'}", "bool key")


# -- arithmetic -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 2 - 3", 5),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("7 / -2", -3),
        ("7 % 3", 1),
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("-7 % -3", -1),
        ("2u + 3u", UInt(5)),
        ("7u / 2u", UInt(3)),
        ("7u % 4u", UInt(3)),
        ("1.5 + 2.25", 3.75),
        ("5.0 / 2.0", 2.5),
        ("1.0 / 0.0", math.inf),
        ("-1.0 / 0.0", -math.inf),
        ("1.0 / -0.0", -math.inf),
        ("0.0 / 0.0", math.nan),
        ("-(2.5)", -2.5),
        ("--3", 3),
        ("-x", -5),
        ("'ab' + 'cd'", "abcd"),
        ("b'a' + b'b'", b"ab"),
        ("[1] + [2, 'x']", [1, 2, "x"]),
        ("-9223372036854775807 - 1", -9223372036854775808),
        # The documented deviation: int mixed with double computes in double.
        ("1 + 2.5", 3.5),
        ("2.5 * 2", 5.0),
        ("10 - 0.5", 9.5),
        ("window.refund_total + args.amount", 550.0),
        ("3 / 2.0", 1.5),
    ],
)
def test_arithmetic(source: str, expected: Any) -> None:
    check(source, expected, x=5)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("9223372036854775807 + 1", "overflow"),
        ("-9223372036854775808 - 1", "overflow"),
        ("9223372036854775807 * 2", "overflow"),
        ("-9223372036854775808 / -1", "overflow"),
        ("-9223372036854775808 % -1", "overflow"),
        ("-(-9223372036854775807 - 1)", "overflow"),
        ("18446744073709551615u + 1u", "overflow"),
        ("1u - 2u", "overflow"),
        ("1 / 0", "division by zero"),
        ("1 % 0", "modulus by zero"),
        ("1u / 0u", "division by zero"),
        ("1 + 1u", "no such overload"),
        ("1.5 % 1.0", "no such overload"),
        ("'a' + 1", "no such overload"),
        ("'a' * 2", "no such overload"),
        ("{'a': 1} + {'b': 2}", "no such overload"),
        ("true + true", "no such overload"),
        ("-1u", "no such overload"),
        ("-'a'", "no such overload"),
        ("!1", "no such overload"),
    ],
)
def test_arithmetic_errors(source: str, message: str) -> None:
    fails(source, message)


def test_python_bool_is_never_a_number() -> None:
    fails("x + 1", "no such overload", x=True)
    fails("x < 2", "no such overload", x=True)
    check("x == 1", False, x=True)
    check("x == true", False, x=1)
    check("x in [1]", False, x=True)
    check("1 in x", False, x=[True])
    fails("m[true]", "no such key", m={1: "one"})
    fails("m[1]", "no such key", m={True: "yes"})
    check("m[true]", "yes", m={True: "yes"})
    check("1 in m", False, m={True: "yes"})


def test_decimal_behaves_as_double() -> None:
    check("x > 100.0", True, x=Decimal("150.5"))
    check("x == 1.5", True, x=Decimal("1.5"))
    check("x + 1.0", 2.5, x=Decimal("1.5"))
    check("x * 2", 3.0, x=Decimal("1.5"))
    check("-x", -2.0, x=Decimal("2"))
    check("int(x)", 2, x=Decimal("2.7"))
    check("string(x)", "2.5", x=Decimal("2.50"))
    check("type(x) == double", True, x=Decimal("1"))
    fails("x % 2.0", "no such overload", x=Decimal("1"))


def test_tuples_are_lists() -> None:
    check("x == [1, 2]", True, x=(1, 2))
    check("x + [3]", [1, 2, 3], x=(1, 2))
    check("x[1]", 2, x=(1, 2))
    check("2 in x", True, x=(1, 2))
    check("x.map(v, v * 2)", [2, 4], x=(1, 2))
    check("size(x)", 2, x=(1, 2))


# -- equality and ordering --------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 == 1", True),
        ("1 == 1.0", True),
        ("1 == 1u", True),
        ("1u == 1.0", True),
        ("2 != 2.5", True),
        ("1 == 'a'", False),
        ("'a' == b'a'", False),
        ("null == null", True),
        ("null == 0", False),
        ("null != false", True),
        ("[1, 2] == [1, 2]", True),
        ("[1, 2] == [2, 1]", False),
        ("[1] == [1.0]", True),
        ("[1, [2, 'x']] == [1, [2u, 'x']]", True),
        ("[1] == [1, 2]", False),
        ("{'a': 1} == {'a': 1.0}", True),
        ("{'a': 1, 'b': 2} == {'b': 2, 'a': 1}", True),
        ("{'a': 1} == {'b': 1}", False),
        ("{1: 'x'} == {1u: 'x'}", True),
        ("0.0 / 0.0 == 0.0 / 0.0", False),
        ("-0.0 == 0.0", True),
        ("type(1) == int", True),
        ("type(1u) == uint", True),
        ("type(1) == type(1u)", False),
        ("2 < 2.5", True),
        ("3u > 2", True),
        ("-1 < 1u", True),
        ("1.5 >= 1", True),
        ("'abc' < 'abd'", True),
        ("'b' > 'abc'", True),
        ("b'a' < b'b'", True),
        ("false < true", True),
        ("true <= true", True),
        ("9223372036854775807 < 9223372036854775808.0", False),  # compared as doubles
        ("9223372036854775807 > 9223372036854775806", True),
        ("1 == 1 == true", True),
    ],
)
def test_equality_and_ordering(source: str, expected: bool) -> None:
    check(source, expected)


@pytest.mark.parametrize(
    "source",
    [
        "1 < 'a'",
        "[1] < [2]",
        "null < null",
        "{} < {}",
        "0.0 / 0.0 < 1.0",
        "1 < 0.0 / 0.0",
        "true < 1",
    ],
)
def test_ordering_errors(source: str) -> None:
    fails(source)


def test_comparison_fast_paths_agree_with_general_path() -> None:
    # Comparisons against a literal take a specialised closure; check it on every type.
    for value in (5, 5.0, UInt(5), Decimal("5"), float("nan"), "5", True, None, [5]):
        for op in ("<", "<=", ">", ">=", "==", "!="):
            literal_side = compile_(f"x {op} 5")
            general = compile_(f"x {op} y")
            try:
                expected: Any = general.evaluate({"x": value, "y": 5})
            except CelEvalError:
                with pytest.raises(CelEvalError):
                    literal_side.evaluate({"x": value})
            else:
                assert literal_side.evaluate({"x": value}) is expected, (value, op)


# -- logic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("true && true", True),
        ("true && false", False),
        ("false || true", True),
        ("false || false", False),
        ("false && (1 / 0 == 1)", False),
        ("(1 / 0 == 1) && false", False),
        ("true || (1 / 0 == 1)", True),
        ("(1 / 0 == 1) || true", True),
        ("args.missing && false", False),
        ("false && args.missing", False),
        ("args.missing || true", True),
        ("1 && false", False),
        ("'x' || true", True),
        ("true && true && (1 / 0 == 1) && false", False),
        ("false || (1 / 0 == 1) || true", True),
        ("(true && (1 / 0 == 1)) || true", True),
        ("!false", True),
        ("!!true", True),
        ("true ? 1 : 2", 1),
        ("false ? 1 : 'two'", "two"),
        ("true ? 'ok' : 1 / 0", "ok"),
        ("false ? 1 / 0 : 'ok'", "ok"),
        ("true ? (false ? 1 : 2) : 3", 2),
        ("false ? 1 : true ? 2 : 3", 2),
        ("1 < 2 ? 'lt' : 'ge'", "lt"),
    ],
)
def test_logic(source: str, expected: Any) -> None:
    check(source, expected)


@pytest.mark.parametrize(
    "source",
    [
        "(1 / 0 == 1) && true",
        "true && (1 / 0 == 1)",
        "false || (1 / 0 == 1)",
        "(1 / 0 == 1) || false",
        "(1 / 0 == 1) || (1 / 0 == 1)",
        "true && true && (1 / 0 == 1)",
        "1 && true",
        "true && 'x'",
        "false || 1",
        "1 ? 2 : 3",
        "null ? 1 : 2",
    ],
)
def test_logic_errors(source: str) -> None:
    fails(source)


class CountingActivation(Mapping[str, Any]):
    """An activation that records which roots were read."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self.reads: list[str] = []

    def __getitem__(self, key: str) -> Any:
        self.reads.append(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@pytest.mark.parametrize(
    ("source", "result"),
    [
        ("x == 1 && y == 2", False),
        ("x == 2 || y == 2", True),
        ("x == 1 ? y : 0", 0),
        ("x == 1 && y == 1 && y == 2", False),
    ],
)
def test_short_circuit_when_left_side_decides(source: str, result: Any) -> None:
    activation = CountingActivation({"x": 2, "y": 2})
    assert compile_(source).evaluate(activation) == result
    assert activation.reads == ["x"]


def test_activation_may_be_any_mapping() -> None:
    activation = CountingActivation({"x": [1, 2]})
    assert compile_("x.exists(v, v == 2)").evaluate(activation) is True


# -- membership, selection, indexing ----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 in [1, 2]", True),
        ("3 in [1, 2]", False),
        ("'a' in ['a', 'b']", True),
        ("'c' in ['a', 'b']", False),
        ("1 in ['a', 'b']", False),
        ("1 in [1.0]", True),
        ("1u in [1]", True),
        ("null in [null]", True),
        ("[1] in [[1], [2]]", True),
        ("'a' in {'a': 1}", True),
        ("'z' in {'a': 1}", False),
        ("1 in {1: 'x'}", True),
        ("1.0 in {1: 'x'}", True),
        ("1.5 in {1: 'x'}", False),
        ("2u in {2: 'x'}", True),
        ("args.count in [1, 2, 3]", True),
    ],
)
def test_membership(source: str, expected: bool) -> None:
    check(source, expected)


def test_membership_errors() -> None:
    fails("'a' in 'abc'", "no such overload")
    fails("1 in 1", "no such overload")
    fails("[1] in {'a': 1}", "unsupported map key type")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("tool.name", "issue_refund"),
        ("args.nested.deep.x", 1),
        (".args.count", 3),
        ("args.items[1].sku", "b"),
        ("args['count']", 3),
        ("args.items[0]['qty']", 2),
        ("args.items[1u].sku", "b"),
        ("args.items[1.0].sku", "b"),  # an integral double index is allowed
        ("args.none", None),
        ("{'a': {'b': 1}}.a.b", 1),
        ("{1: 'x', 2u: 'y'}[2]", "y"),
        ("{1: 'x'}[1.0]", "x"),
        ("{'a': 1}['a']", 1),
        ("[[1, 2], [3]][0][1]", 2),
        ("has(args.count)", True),
        ("has(args.missing)", False),
        ("has(args.nested.deep)", True),
        ("has(args.nested.deep.y)", False),
        ("has({'a': 1}.a)", True),
        ("has(args.none)", True),
    ],
)
def test_selection_and_indexing(source: str, expected: Any) -> None:
    check(source, expected)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("args.missing", "no such key: missing"),
        ("args.nested.nope.x", "no such key: nope"),
        ("args.count.x", "does not support field selection"),
        ("args.items.sku", "does not support field selection"),
        ("args.note.x", "does not support field selection"),
        ("args.none.x", "does not support field selection"),
        ("args.items[2]", "index out of range"),
        ("args.items[-1]", "index out of range"),
        ("args.items[0.5]", "not an integer"),
        ("args.items['a']", "list index"),
        ("args['missing']", "no such key"),
        ("{1: 'x'}[1.5]", "no such key"),
        ("'abc'[0]", "no such overload"),
        ("has(args.missing.x)", "no such key: missing"),
        ("has(args.count.x)", "has\\(\\) on type 'int'"),
        ("x", "no value for 'x'"),
    ],
)
def test_selection_errors(source: str, message: str) -> None:
    fails(source, message)


def test_selection_on_non_dict_mappings() -> None:
    activation = {"m": CountingActivation({"k": {"z": 1}})}
    assert compile_("m.k.z").evaluate(activation) == 1
    assert compile_("has(m.k) && !has(m.j)").evaluate(activation) is True
    with pytest.raises(CelEvalError, match="no such key: j"):
        compile_("m.j").evaluate(activation)


# -- functions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("size('héllo')", 5),  # code points, not UTF-8 bytes
        ("'😀'.size()", 1),
        ("size(b'\\xff\\x00')", 2),
        ("size([1, [2, 3]])", 2),
        ("size({'a': 1})", 1),
        ("args.items.size()", 2),
        ("args.note.contains('transit')", True),
        ("args.note.startsWith('Dam')", True),
        ("args.note.endsWith('sit')", True),
        ("'abc'.contains('')", True),
        ("args.note.matches('^D.*t$')", True),
        ("args.note.matches('[0-9]')", False),
        ("'a.b'.matches('a\\\\.b')", True),
        ("matches('xyz', 'y')", True),
        ("s.matches(x)", True),
        ("'MiXeD 123'.lowerAscii()", "mixed 123"),
        ("'MiXeD é'.upperAscii()", "MIXED é"),
        ("int('42')", 42),
        ("int('-7')", -7),
        ("int('+7')", 7),
        ("int(2.9)", 2),
        ("int(-2.9)", -2),
        ("int(3u)", 3),
        ("uint(5)", UInt(5)),
        ("uint(2.5)", UInt(2)),
        ("uint('7')", UInt(7)),
        ("double(3)", 3.0),
        ("double(3u)", 3.0),
        ("double('2.5')", 2.5),
        ("double('1e3')", 1000.0),
        ("double('-inf')", -math.inf),
        ("string(12)", "12"),
        ("string(12u)", "12"),
        ("string(1.5)", "1.5"),
        ("string(100.0)", "100"),
        ("string(1e20)", "1e+20"),
        ("string(0.0001)", "0.0001"),
        ("string(-0.0)", "-0"),
        ("string(true)", "true"),
        ("string(b'abc')", "abc"),
        ("string('x')", "x"),
        ("string(type(1))", "int"),
        ("bytes('é')", b"\xc3\xa9"),
        ("bool('true')", True),
        ("bool('F')", False),
        ("dyn(1) == 1.0", True),
        ("type(null) == null_type", True),
        ("type([]) == list && type({}) == map && type('') == string", True),
        ("type(b'') == bytes && type(true) == bool && type(1.0) == double", True),
        ("type(type(1)) == type", True),
    ],
)
def test_functions(source: str, expected: Any) -> None:
    check(source, expected, s="xyz", x="y")


def test_type_values() -> None:
    check("type(1)", CelType("int"))
    check("int", CelType("int"))
    assert str(CelType("uint")) == "uint"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("size(1)", "no such overload"),
        ("'abc'.contains(1)", "no such overload"),
        ("args.count.startsWith('a')", "no such overload"),
        ("int(' 1')", "cannot convert"),
        ("int('1.5')", "cannot convert"),
        ("int('9223372036854775808')", "out of range"),
        ("int(1e19)", "out of range"),
        ("int(0.0 / 0.0)", "cannot convert"),
        ("uint(-1)", "out of range"),
        ("uint(-0.5)", "cannot convert"),
        ("uint('+1')", "cannot convert"),
        ("double('abc')", "cannot convert"),
        ("double('1_000')", "cannot convert"),
        ("string(b'\\xff')", "not valid UTF-8"),
        ("string(null)", "no such overload"),
        ("bool('yes')", "cannot convert"),
        ("s.matches(x)", "invalid regular expression"),
        ("1.lowerAscii()", "no such overload"),
    ],
)
def test_function_errors(source: str, message: str) -> None:
    fails(source, message, x="[", s="abc")


def test_literal_regex_is_checked_at_compile_time() -> None:
    with pytest.raises(CelCompileError, match="invalid regular expression") as info:
        compile_("args.note.matches('(')")
    assert (info.value.line, info.value.column) == (1, 11)


def test_timestamps_and_durations() -> None:
    check("duration('1h30m') == duration('90m')", True)
    check("duration('1.5s') + duration('500ms')", timedelta(seconds=2))
    check("duration('-1h') < duration('0')", True)
    check("timestamp('2024-01-01T00:00:00Z') + duration('24h')", datetime(2024, 1, 2, tzinfo=UTC))
    check(
        "timestamp('2024-03-05T10:20:30Z') - timestamp('2024-03-05T10:00:00Z')",
        timedelta(minutes=20, seconds=30),
    )
    check(
        "timestamp('2024-03-05T11:20:30+01:00') == timestamp('2024-03-05T10:20:30Z')",
        True,
    )
    stamp = "timestamp('2024-03-05T10:20:30.25Z')"
    check(f"{stamp}.getFullYear()", 2024)
    check(f"{stamp}.getMonth()", 2)
    check(f"{stamp}.getDate()", 5)
    check(f"{stamp}.getDayOfMonth()", 4)
    check(f"{stamp}.getDayOfWeek()", 2)
    check(f"{stamp}.getDayOfYear()", 64)
    check(f"{stamp}.getHours()", 10)
    check(f"{stamp}.getHours('+05:30')", 15)
    check(f"{stamp}.getMinutes('-01:30')", 50)
    check(f"{stamp}.getSeconds()", 30)
    check(f"{stamp}.getMilliseconds()", 250)
    check("duration('90m').getHours()", 1)
    check("duration('-90m').getMinutes()", -90)
    check("duration('1s1ms').getMilliseconds()", 1001)
    check(f"string({stamp})", "2024-03-05T10:20:30.25Z")
    check("string(timestamp('2024-03-05T10:20:30+01:00'))", "2024-03-05T10:20:30+01:00")
    check("string(duration('1h'))", "3600s")
    check("string(duration('-1.5s'))", "-1.5s")
    check("int(timestamp('1970-01-02T00:00:00Z'))", 86400)
    check("timestamp(86400) == timestamp('1970-01-02T00:00:00Z')", True)
    check("x < timestamp('2030-01-01T00:00:00Z')", True, x=datetime(2024, 1, 1, tzinfo=UTC))
    check(
        "x.getHours()",
        3,
        x=datetime(2024, 1, 1, 5, tzinfo=timezone(timedelta(hours=2))),
    )
    # Literals that cannot parse are load errors (a zone-less timestamp among them) ...
    for literal, match in (
        ("duration('1x')", "invalid duration"),
        ("duration('')", "invalid duration"),
        ("timestamp('2024-13-01T00:00:00Z')", "invalid timestamp"),
        ("timestamp('2024-01-01')", "needs its time zone"),
        ("timestamp('2026-01-01T00:00:00')", "needs its time zone"),
    ):
        with pytest.raises(CelCompileError, match=match):
            compile_expression(literal, roots=())
    # ... the same text computed at run time is an evaluation error.
    fails("duration(x)", "invalid duration", x="1x")
    fails("timestamp(x)", "invalid timestamp", x="2024-01-01T00:00:00")
    fails("timestamp('9999-12-31T23:59:59Z') + duration('24h')", "out of range")
    fails("duration('1h') + 1", "no such overload")
    fails("timestamp('2024-01-01T00:00:00Z').getHours('Nowhere/City')", "time zone")


# -- macros -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("[1, 2, 3].all(x, x > 0)", True),
        ("[1, 2, 3].all(x, x > 1)", False),
        ("[].all(x, false)", True),
        ("[1, 2, 3].exists(x, x == 2)", True),
        ("[].exists(x, true)", False),
        ("[1, 2, 3].exists_one(x, x > 1)", False),
        ("[1, 2, 3].exists_one(x, x == 2)", True),
        ("[1, 2, 3].map(x, x * x)", [1, 4, 9]),
        ("[1, 2, 3].map(x, x > 1, x * 10)", [20, 30]),
        ("[1, 2, 3].filter(x, x % 2 == 1)", [1, 3]),
        ("{'a': 1, 'b': 2}.all(k, k.size() == 1)", True),
        ("{'a': 1, 'b': 2}.exists(k, k == 'b')", True),
        ("{'a': 1, 'b': 2}.map(k, k + '!')", ["a!", "b!"]),
        ("{'a': 1, 'b': 2}.filter(k, k != 'a')", ["b"]),
        ("args.items.all(i, has(i.sku))", True),
        ("args.items.exists(i, i.sku == 'b' && i.qty == 0)", True),
        ("args.items.map(i, i.sku)", ["a", "b"]),
        ("args.items.filter(i, i.qty > 0).size()", 1),
        # Errors are absorbed by a decisive element, like && and ||.
        ("[0, 1].all(x, 1 / x > 1)", False),
        ("[0, 1].exists(x, 1 / x > 0)", True),
        ("[1, 'a'].exists(x, x == 1)", True),
        ("[0, 'a'].all(x, x > 0)", False),
        # Comprehension variables shadow roots and outer variables.
        ("[1].all(args, args == 1)", True),
        ("[1].all(x, [2].all(x, x == 2))", True),
        ("[1, 2].map(x, [3].map(y, x + y))", [[4], [5]]),
        ("[1, 2].all(x, [3, 4].exists(y, y > x))", True),
    ],
)
def test_macros(source: str, expected: Any) -> None:
    check(source, expected)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("[0, 1].all(x, 1 / x > 0)", "division by zero"),
        ("[1, 'a'].all(x, x > 0)", "no such overload"),
        ("[1, 2].exists_one(x, x / 0 > 1)", "division by zero"),
        ("[1, 2].map(x, x / 0)", "division by zero"),
        ("[1, 2].filter(x, x)", "no such overload"),
        ("[1, 2].map(x, x, x)", "no such overload"),
        ("[1].all(x, 1)", "no such overload"),
        ("1.all(x, true)", "no such overload"),
        ("'abc'.exists(x, true)", "no such overload"),
    ],
)
def test_macro_errors(source: str, message: str) -> None:
    fails(source, message)


def test_comprehensions_are_thread_safe() -> None:
    expr = compile_("l.all(x, l.exists(y, y == x))")
    failures: list[BaseException] = []

    def run(values: list[int]) -> None:
        try:
            for _ in range(200):
                assert expr.evaluate({"l": values}) is True
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    threads = [threading.Thread(target=run, args=([i, i + 1, i + 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# -- compile-time errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("1 +", 1, 4),
        ("(1", 1, 3),
        ("[1, 2", 1, 6),
        ("{'a' 1}", 1, 6),
        ("a.", 1, 3),
        ("1 === 2", 1, 5),
        ("'unterminated", 1, 1),
        ("in", 1, 1),
        ("x $ y", 1, 3),
        ("f(1,)", 1, 5),
        ("-!true", 1, 2),
        ("a.1", 1, 2),
        ("1 < 2 <", 1, 8),
        ("true ? false ? 1 : 2 : 3", 1, 14),  # the middle operand cannot be a conditional
        ("", 1, 1),
        ("   \n  ", 2, 3),
        ("tool.name == 'x' &&\n  args.amount >\n  * 100", 3, 3),
        ("tool.name == 'x'\n&& args.items.all(i,\n    i.qty > 0 ||| true)", 3, 17),
        ("'''a\nb''' + \n 'x' 1", 3, 6),
        ("as", 1, 1),
        ("x.all(while, true)", 1, 7),
    ],
)
def test_syntax_errors_point_at_the_problem(source: str, line: int, column: int) -> None:
    with pytest.raises(CelSyntaxError) as info:
        compile_(source)
    assert (info.value.line, info.value.column) == (line, column), info.value


@pytest.mark.parametrize(
    ("source", "message", "line", "column"),
    [
        ("undeclared > 1", "undeclared reference to 'undeclared'", 1, 1),
        ("tool.name == 'x' &&\n  agrs.amount > 1", "undeclared reference to 'agrs'", 2, 3),
        ("[1].all(v, w > 0)", "undeclared reference to 'w'", 1, 12),
        ("[1].all(v, v > 0) && v > 0", "undeclared reference to 'v'", 1, 22),
        ("nosuch(1)", "unknown function 'nosuch'", 1, 1),
        ("args.note.nosuch()", "unknown method 'nosuch'", 1, 11),
        ("contains('a', 'b')", "must be called as a method", 1, 1),
        ("args.note.int()", "must be called as a function", 1, 11),
        ("size()", "size\\(\\) takes 1 argument, got 0", 1, 1),
        ("size(1, 2)", "takes 1 argument", 1, 1),
        ("'a'.contains()", "takes 1 argument", 1, 5),
        ("'a'.size(1)", "takes 0 arguments", 1, 5),
        ("has()", "has\\(\\) takes 1 argument", 1, 1),
        ("has(args)", "needs a field selection", 1, 5),
        ("has(args[0])", "needs a field selection", 1, 9),
        ("[1].map(x)", "takes 2 or 3 arguments", 1, 5),
        ("[1].all(x, true, false)", "takes 2 arguments", 1, 5),
        ("[1].exists(1, true)", "must be a variable name", 1, 12),
        ("[1].filter(x.y, true)", "must be a variable name", 1, 14),
        ("all([1], x, true)", "must be called as a method", 1, 1),
        ("args.has(x)", "must be called as a function", 1, 6),
    ],
)
def test_compile_errors(source: str, message: str, line: int, column: int) -> None:
    with pytest.raises(CelCompileError, match=message) as info:
        compile_expression(source, roots={"tool", "args"})
    assert (info.value.line, info.value.column) == (line, column), info.value


def test_roots_are_the_only_free_names() -> None:
    expr = compile_expression("a + b", roots=["a", "b"])
    assert expr.evaluate({"a": 1, "b": 2}) == 3
    with pytest.raises(CelCompileError):
        compile_expression("a + b", roots=["a"])
    with pytest.raises(CelCompileError):
        compile_expression("a", roots=[])


def test_deep_nesting_is_a_compile_error_not_a_crash() -> None:
    with pytest.raises(CelCompileError, match="nested too deeply"):
        compile_("[" * 5000 + "1" + "]" * 5000)
    assert compile_("(" * 500 + "1" + ")" * 500).evaluate({}) == 1
    nested: list[Any] = []
    for _ in range(99):
        nested = [nested]
    assert compile_("[" * 100 + "]" * 100).evaluate({}) == nested
    assert compile_(" + ".join(["x"] * 300)).evaluate({"x": 1}) == 300


# -- runtime errors never escape as anything else ---------------------------------------


class Exploding(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.mark.parametrize(
    ("source", "activation"),
    [
        ("x.y", {"x": Exploding()}),
        ("x", Exploding()),
        ("x == 1", None),
        ("x + 1", {"x": object()}),
        ("x < 1", {"x": object()}),
        ("x[0]", {"x": {1, 2}}),
        ("x.all(v, v)", {"x": object()}),
        ("x > 1.0", {"x": Decimal("sNaN")}),
        ("x + 1.0", {"x": 10**400}),
        ("x == y", {"x": [], "y": []}),
    ],
)
def test_runtime_failures_are_cel_eval_errors(source: str, activation: Any) -> None:
    expr = compile_(source)
    if source == "x == y":
        # A self-referential list recurses without end; it must still fail cleanly.
        activation["x"].append(activation["x"])
        activation["y"].append(activation["y"])
    with pytest.raises(CelEvalError):
        expr.evaluate(activation)


# -- static analysis --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("tool.name == 'a' && args.amount > 1", {("tool", "name"), ("args", "amount")}),
        ("window.refunds_24h > 3", {("window", "refunds_24h")}),
        ("facts.order.payment_method == 'card'", {("facts", "order", "payment_method")}),
        ("size(args) > 0", {("args",)}),
        ("args[0] == 1", {("args",)}),
        ("args.items[0].sku == 'a'", {("args", "items")}),
        ("args.items.size() > 1", {("args", "items")}),
        ("has(args.coupon)", {("args", "coupon")}),
        ("has(args.a.b)", {("args", "a", "b")}),
        ("args.items.exists(i, i.sku == tool.name)", {("args", "items"), ("tool", "name")}),
        ("[1].all(args, args > 0)", set()),
        ("[1].all(x, args.limit > x)", {("args", "limit")}),
        ("{'k': args.v}.k == 1", {("args", "v")}),
        ("1 + 2 == 3", set()),
        ("tool", {("tool",)}),
    ],
)
def test_references(source: str, expected: set[tuple[str, ...]]) -> None:
    assert compile_(source).references == frozenset(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("tool.name == 'issue_refund'", {"issue_refund"}),
        ("'issue_refund' == tool.name", {"issue_refund"}),
        ("tool.name == 'issue_refund' && args.amount > 100.0", {"issue_refund"}),
        ("args.amount > 100.0 && (tool.name == 'a' && window.n < 3)", {"a"}),
        ("tool.name in ['a', 'b'] && args.x == 1", {"a", "b"}),
        ("tool.name in ['a', 'b'] && tool.name == 'b'", {"b"}),
        ("tool.name == 'a' && tool.name == 'b'", set()),
        ("tool.name == 'a' || tool.name == 'b'", {"a", "b"}),
        ("(tool.name == 'a' || tool.name in ['b', 'c']) && x", {"a", "b", "c"}),
        ("tool.name == 'a' || args.x == 1", None),
        ("args.amount > 100.0", None),
        ("tool.name != 'a'", None),
        ("!(tool.name == 'a')", None),
        ("tool.name == 'a' ? true : false", None),
        ("tool.name == 1", None),
        ("tool.name in ['a', 1]", None),
        ("tool.name in args.names", None),
        ("[1].all(tool, tool.name == 'a')", None),
        ("tool.name.startsWith('a')", None),
    ],
)
def test_pinned_values(source: str, expected: set[str] | None) -> None:
    pinned = compile_(source).pinned_values(("tool", "name"))
    assert pinned == (None if expected is None else frozenset(expected))


def test_pinned_values_for_other_paths() -> None:
    expr = compile_("facts.order.payment_method == 'card' && tool.name == 'refund'")
    assert expr.pinned_values(("facts", "order", "payment_method")) == frozenset({"card"})
    assert expr.pinned_values(("tool", "name")) == frozenset({"refund"})
    assert expr.pinned_values(("tool",)) is None
    assert expr.pinned_values(("args", "amount")) is None


def test_compiled_expression_is_a_frozen_value() -> None:
    expr = compile_("tool.name == 'x'")
    assert expr.source == "tool.name == 'x'"
    with pytest.raises(AttributeError):
        expr.source = "other"  # type: ignore[misc]
    assert expr == compile_("tool.name == 'x'")
    assert "tool.name" in repr(expr)
