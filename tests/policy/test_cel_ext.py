"""The list and math functions of policy language v2: the cel-go extensions, Warden's
aggregates, and the comprehension macros over lists of maps.

Three layers: unit cases per function (values, types and errors, many taken from cel-go's
own ``ext/*_test.go``), a differential run against the reference library's extended
standard library (``cel.stdlib``, skipped when ``cel`` is not installed), and a policy
engine that loads a spec whose rule sums a list of payments.
"""

# cel-go's cases use Greek letters on purpose: multi-byte code points inside strings.
# ruff: noqa: RUF001

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from warden.errors import CelCompileError, CelError, CelEvalError, SpecError
from warden.policy import Policy
from warden.policy.cel import UInt, compile_expression
from warden.spec import EffectClass, Tier, load_spec_text

ROOTS = ("args", "facts", "x", "y")
PAYMENTS = [
    {"amount": 10.5, "method": "card"},
    {"amount": 4.5, "method": "cash"},
    {"amount": 5.0, "method": "card"},
]
CONTEXT: dict[str, Any] = {
    "args": {
        "payments": PAYMENTS,
        "tags": ["b", "a", "c", "a"],
        "note": "  Hello World  ",
        "n": 3,
        "empty": [],
    },
    "facts": {"price": {"total": 20.0}},
}


def ev(source: str, **variables: Any) -> Any:
    return compile_expression(source, roots=ROOTS).evaluate({**CONTEXT, **variables})


def same(actual: Any, expected: Any) -> bool:
    """Equal with the same Python type throughout (1, 1u, 1.0 and True all differ)."""
    if type(actual) is not type(expected):
        return False
    if isinstance(actual, list):
        return len(actual) == len(expected) and all(map(same, actual, expected))
    if isinstance(actual, float) and math.isnan(expected):
        return math.isnan(actual)
    if isinstance(actual, float):
        return actual == expected and math.copysign(1, actual) == math.copysign(1, expected)
    return bool(actual == expected)


def check(source: str, expected: Any, **variables: Any) -> None:
    result = ev(source, **variables)
    assert same(result, expected), f"{source!r} gave {result!r}, expected {expected!r}"


def fails(source: str, message: str, **variables: Any) -> None:
    with pytest.raises(CelEvalError, match=message):
        ev(source, **variables)


def rejected(source: str, message: str) -> CelCompileError:
    with pytest.raises(CelCompileError, match=message) as info:
        compile_expression(source, roots=ROOTS)
    return info.value


# -- macros over lists of maps ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("args.payments.map(p, p.amount)", [10.5, 4.5, 5.0]),
        ("args.payments.map(p, p.method == 'card', p.amount)", [10.5, 5.0]),
        ("args.payments.filter(p, p.method == 'card').map(p, p.amount)", [10.5, 5.0]),
        ("args.payments.all(p, p.amount > 0.0)", True),
        ("args.payments.all(p, p.method == 'card')", False),
        ("args.payments.exists(p, p.method == 'cash')", True),
        ("args.payments.exists_one(p, p.method == 'card')", False),
        ("args.payments.exists_one(p, p.method == 'cash')", True),
        ("args.payments.sortBy(p, p.amount).map(p, p.method)", ["cash", "card", "card"]),
        ("args.payments.sortBy(p, p.method).map(p, p.amount)", [10.5, 5.0, 4.5]),
        ("sum(args.payments.map(p, p.amount)) == facts.price.total", True),
        ("max(args.payments.map(p, p.amount))", 10.5),
        ("args.payments.map(p, p.method).distinct()", ["card", "cash"]),
        ("args.empty.map(p, p.amount)", []),
        ("sum(args.empty.map(p, p.amount))", 0),
    ],
)
def test_macros_over_lists_of_maps(source: str, expected: Any) -> None:
    check(source, expected)


def test_macro_errors_over_lists_of_maps() -> None:
    fails("args.payments.map(p, p.nope)", "no such key: nope")
    fails("args.payments.map(p, p.amount, p.amount)", "no such overload: map")
    fails("sum(args.payments)", "element 0 is map")
    fails("args.payments.sortBy(p, p)", "map values cannot be ordered")
    fails("{'a': 1}.sortBy(k, k)", r"no such overload: sortBy\(map\)")


# -- cel-go's own test cases (ext/math_test.go, strings_test.go, lists_test.go) -----------

CEL_GO_TRUE = [
    # math
    "math.least(-0.5) == -0.5", "math.least(1u) == 1u", "math.least(42.0, -0.5) == -0.5",
    "math.least(-1, -1) == -1", "math.least(1u, 42u, 0u) == 0u", "math.least(1, 1.0) == 1",
    "math.least(1, -2.0) == -2.0", "math.least(2, 1u) == 1u", "math.least(1.5, -2) == -2",
    "math.least(2u, 2.5) == 2u", "math.least(1u, dyn(42), dyn(0.0)) == 0u",
    "math.least([1u, 42u, 0u]) == 0u", "math.greatest(-0.5) == -0.5",
    "math.greatest(1u, 42u) == 42u", "math.greatest(42.0, -0.5, -0.25) == 42.0",
    "math.greatest(1, 1.0) == 1", "math.greatest(2, 1u) == 2", "math.greatest(1u, -2) == 1u",
    "math.greatest(2u, 2.5) == 2.5", "math.greatest([1u, dyn(0.0), 0u]) == 1",
    "math.bitAnd(1, 2) == 0", "math.bitAnd(1, -1) == 1", "math.bitOr(1, 2) == 3",
    "math.bitXor(3, 5) == 6", "math.bitNot(0) == -1", "math.bitNot(-1) == 0",
    "math.bitShiftLeft(1, 2) == 4", "math.bitShiftLeft(-1, 200) == 0",
    "math.bitShiftRight(1024, 64) == 0", "math.bitShiftRight(-1024, 3) == 2305843009213693824",
    "math.bitAnd(1u, 3u) == 1u", "math.bitNot(1u) == 18446744073709551614u",
    "math.bitShiftLeft(1u, 200) == 0u", "math.bitShiftRight(1024u, 2) == 256u",
    "math.isNaN(0.0/0.0)", "!math.isNaN(1.0/0.0)", "math.isFinite(1.0/1.5)",
    "!math.isFinite(1.0/0.0)", "math.isInf(1.0/0.0)", "math.ceil(-1.2) == -1.0",
    "math.floor(-1.2) == -2.0", "math.round(1.5) == 2.0", "math.round(-1.5) == -2.0",
    "math.isNaN(math.round(0.0/0.0))", "math.round(-1.2) == -1.0", "math.trunc(-1.3) == -1.0",
    "math.sign(-42) == -1", "math.sign(0u) == 0u", "math.sign(42u) == 1u",
    "math.sign(-0.3) == -1.0", "math.isNaN(math.sign(0.0/0.0))", "math.sign(-1.0/0.0) == -1.0",
    "math.abs(-234.5) == 234.5", "math.sqrt(49.0) == 7.0", "math.sqrt(0) == 0.0",
    "math.sqrt(25u) == 5.0", "math.sqrt(82) == 9.055385138137417",
    "math.isNaN(math.sqrt(-15.34))",
    # strings
    "'tacocat'.charAt(3) == 'o'", "'tacocat'.charAt(7) == ''", "'©αT'.charAt(0) == '©'",
    "'tacocat'.indexOf('') == 0", "'tacocat'.indexOf('ac') == 1", "'tacocat'.indexOf('', 3) == 3",
    "'tacocat'.indexOf('at', 3) == 5", "'ta©o©αT'.indexOf('©', 3) == 4",
    "'ta©o©αT'.indexOf('©α', 5) == -1", "'hello wello'.indexOf('elbo room!!!') == -1",
    "'tacocat'.indexOf('a', 30) == -1", "'tacocat'.indexOf('', 30) == 7",
    "''.lastIndexOf('@@') == -1", "'tacocat'.lastIndexOf('') == 7",
    "'tacocat'.lastIndexOf('at') == 5", "'tacocat'.lastIndexOf('', 3) == 3",
    "'tacocat'.lastIndexOf('a', 3) == 1", "'ta©o©αT'.lastIndexOf('©', 3) == 2",
    "'ta©o©αT'.lastIndexOf('©α', 4) == 4", "'bananananana'.lastIndexOf('nana', 7) == 6",
    "'tacocat'.lastIndexOf('a', 30) == -1", "'tacocat'.lastIndexOf('', 30) == 7",
    "'TacoCÆt Xii'.lowerAscii() == 'tacocÆt xii'", "'tacoCαt'.upperAscii() == 'TACOCαT'",
    "\"{0} days {0} hours\".replace(\"{0}\", \"2\", 1).replace(\"{0}\", \"23\") == \"2 days 23 hours\"",
    "\"1 ©αT taco\".replace(\"αT\", \"o©α\") == \"1 ©o©α taco\"",
    "\"hello hello\".replace(\"\", \"_\") == \"_h_e_l_l_o_ _h_e_l_l_o_\"",
    "\"hello world events!\".split(\" \", 0) == []",
    "\"hello world events!\".split(\" \", 1) == [\"hello world events!\"]",
    "\"o©o©o©o\".split(\"©\", -1) == [\"o\", \"o\", \"o\", \"o\"]",
    "\"tacocat\".substring(7) == \"\"", "\"tacocat\".substring(4, 4) == \"\"",
    "'ta©o©αT'.substring(2, 6) == \"©o©α\"", "\" \\f\\n\\r\\t\\vtext  \".trim() == \"text\"",
    "\"\\u0085\\u00a0\\u1680text\".trim() == \"text\"",
    "\"\\u200atext\\u2028\\u2029\\u202F\\u205F\\u3000\".trim() == \"text\"",
    "\"\\u180etext\\u200b\\u200c\\u200d\\u2060\\ufeff\".trim() == "
    "\"\\u180etext\\u200b\\u200c\\u200d\\u2060\\ufeff\"",
    "'palindromes'.reverse() == 'semordnilap'", "['x', 'y'].join() == 'xy'",
    "['x', 'y'].join('-') == 'x-y'", "[].join('-') == ''",
    "strings.quote(\"first\\nsecond\") == \"\\\"first\\\\nsecond\\\"\"",
    "strings.quote(\"bell\\a\") == \"\\\"bell\\\\a\\\"\"",
    "strings.quote(\"vertical \\v tab\") == \"\\\"vertical \\\\v tab\\\"\"",
    "strings.quote(\"ends with \\\\\") == \"\\\"ends with \\\\\\\\\\\"\"",
    "strings.quote(\"завтра\") == \"\\\"завтра\\\"\"", "strings.quote(\"\") == \"\\\"\\\"\"",
    # lists
    "lists.range(4) == [0,1,2,3]", "lists.range(0) == []", "[5,1,2,3].reverse() == [3,2,1,5]",
    "[].reverse() == []", "[false, true, true].reverse().reverse() == [false, true, true]",
    "[1,2,3,4].slice(0, 0) == []", "[1,2,3,4].slice(4, 4) == []",
    "[1,2,3,4].slice(1, 3) == [2, 3]", "dyn([]).flatten() == []",
    "[1,[2,[3,4]]].flatten() == [1,2,[3,4]]", "[1,[2,[3,4]]].flatten(2) == [1,2,3,4]",
    "[[1, 2], 3].flatten(3) == [1, 2, 3]", "[].sort() == []",
    "[\"d\", \"a\", \"b\", \"c\"].sort() == [\"a\", \"b\", \"c\", \"d\"]",
    "[].sortBy(e, e) == []", "[-3, 1, -5, -2, 4].sortBy(e, -(e * e)) == [-5, 4, -3, -2, 1]",
    "[-3, 1, -5, -2, 4].map(e, e * 2).sortBy(e, -(e * e)) == [-10, 8, -6, -4, 2]",
    "lists.range(3).sortBy(e, -e) == [2, 1, 0]",
    "[\"a\", \"c\", \"b\", \"first\"].sortBy(e, e == \"first\" ? \"\" : e) == "
    "[\"first\", \"a\", \"b\", \"c\"]",
    "[{'x':4}, {'x':3}].sortBy(m, m['x']) == [{'x':3}, {'x':4}]",
    "[-2, 5, -2, 1, 1, 5, -2, 1].distinct() == [-2, 5, 1]",
    "[1, 2.0, \"c\", 3, \"c\", 1].distinct() == [1, 2.0, \"c\", 3]",
    "[1, 1.0, 2].distinct() == [1, 2]", "[[1], [1], [2]].distinct() == [[1], [2]]",
    # sets
    "sets.contains([], [])", "!sets.contains([], [1])", "sets.contains([1, 2, 3, 4], [2, 3])",
    "sets.contains([1, 2.0, 3u], [1.0, 2u, 3])", "sets.equivalent([1], [1u, 1.0])",
    "sets.equivalent([1, 2, 3], [3u, 2.0, 1])", "!sets.intersects([1], [])",
    "sets.intersects([[1], [2, 3]], [[1, 2], [2, 3.0]])",
]  # fmt: skip


@pytest.mark.parametrize("source", CEL_GO_TRUE)
def test_cel_go_cases(source: str) -> None:
    assert ev(source) is True


CEL_GO_ERRORS = [
    ("math.bitShiftLeft(1, -2)", "negative shift offset"),
    ("math.bitShiftRight(1024u, -4)", "negative shift offset"),
    ("math.abs(-9223372036854775808)", "overflow"),
    ("math.bitOr(dyn(1.2), 1)", r"no such overload: math.bitOr\(double, int\)"),
    ("math.bitXor(dyn(1), dyn(1u))", r"no such overload: math.bitXor\(int, uint\)"),
    ("math.bitNot(dyn([1]))", r"no such overload: math.bitNot\(list\)"),
    ("math.bitShiftRight(dyn({}), 1)", r"no such overload: math.bitShiftRight\(map, int\)"),
    ("math.isInf(dyn(1u))", r"no such overload: math.isInf\(uint\)"),
    ("math.isNaN(dyn(1u))", r"no such overload: math.isNaN\(uint\)"),
    ("math.sign(dyn(''))", r"no such overload: math.sign\(string\)"),
    ("math.ceil(dyn(''))", r"no such overload: math.ceil\(string\)"),
    ("math.greatest(dyn('string'))", r"no such overload: math.greatest\(string\)"),
    ("math.least(x)", "the list is empty"),
    ("math.greatest(x, y)", r"no such overload: math.greatest\(list\)"),
    ("'tacocat'.charAt(30)", "index out of range: 30"),
    ("'tacocat'.indexOf('', -1)", "index out of range: -1"),
    ("'tacocat'.lastIndexOf('a', -1)", "index out of range: -1"),
    ("'tacocat'.substring(40)", "index out of range: 40"),
    ("'tacocat'.substring(1, 50)", "index out of range: 50"),
    ("'tacocat'.substring(4, 3)", "start 4 is after end 3"),
    ("42.charAt(2)", "no such overload"),
    ("'hello'.charAt(true)", "no such overload"),
    ("24.indexOf('2')", "no such overload"),
    ("[1,2,3,4].slice(3, 0)", "start index must not be after the end index"),
    ("[1,2,3,4].slice(0, 10)", "the list has only 4 elements"),
    ("[1,2,3,4].slice(-5, 10)", "negative indexes are not supported"),
    ("[1,[2,[3,[4]]]].flatten(-1)", "depth must not be negative"),
    ("dyn({}).flatten()", "no such overload"),
    ("[].flatten(dyn('1'))", "no such overload"),
    ('["d", 3, 2, "c"].sort()', "must have one type"),
]


@pytest.mark.parametrize(("source", "message"), CEL_GO_ERRORS)
def test_cel_go_error_cases(source: str, message: str) -> None:
    fails(source, message, x=[], y="s")


# -- math ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("math.greatest(1, 2.5, 2u)", 2.5),
        ("math.greatest([3, 1])", 3),
        ("math.greatest(7)", 7),
        ("math.least(1u, 2u)", UInt(1)),
        ("math.least(x)", 1.5),
        ("math.ceil(1.2)", 2.0),
        ("math.ceil(-0.5)", -0.0),  # Go keeps the sign of a zero result
        ("math.floor(-0.0)", -0.0),
        ("math.round(2.5)", 3.0),  # away from zero, not Python's round-half-even
        ("math.round(-2.5)", -3.0),
        ("math.round(0.49999999999999994)", 0.0),
        ("math.round(-0.4)", -0.0),
        ("math.round(1e300)", 1e300),
        ("math.trunc(-1.7)", -1.0),
        ("math.ceil(1.0 / 0.0)", math.inf),
        ("math.floor(0.0 / 0.0)", math.nan),
        ("math.abs(-3)", 3),
        ("math.abs(3u)", UInt(3)),
        ("math.abs(-0.0)", 0.0),
        ("math.sign(-2.5)", -1.0),
        ("math.sign(-0.0)", 0.0),
        ("math.sign(7u)", UInt(1)),
        ("math.sign(-7)", -1),
        ("math.sqrt(2u)", math.sqrt(2)),
        ("math.sqrt(-1)", math.nan),
        ("math.bitOr(1u, 2u)", UInt(3)),
        ("math.bitShiftLeft(9223372036854775807, 1)", -2),  # wraps as Go int64 does
        ("math.bitShiftLeft(18446744073709551615u, 1)", UInt(18446744073709551614)),
        ("math.bitShiftRight(-1, 0)", -1),
        ("math.bitShiftRight(-1, 63)", 1),
    ],
)
def test_math(source: str, expected: Any) -> None:
    check(source, expected, x=[2.0, 1.5, 3])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("math.ceil(1)", r"no such overload: math.ceil\(int\)"),
        ("math.round(x)", r"no such overload: math.round\(bool\)"),  # bool is never a number
        ("math.abs(x)", r"no such overload: math.abs\(bool\)"),
        ("math.greatest(y)", "the list is empty"),
        ("math.greatest(dyn([1, 'a']))", r"no such overload: math.greatest\(string\)"),
        ("math.greatest(1.0, 0.0 / 0.0)", "NaN values cannot be ordered"),
        ("math.sqrt('4')", "no such overload"),
        ("math.bitAnd(1, 1u)", r"math.bitAnd\(int, uint\)"),
        ("math.bitShiftLeft(1, 1u)", r"math.bitShiftLeft\(int, uint\)"),
    ],
)
def test_math_errors(source: str, message: str) -> None:
    fails(source, message, x=True, y=[])


def test_decimal_is_a_double_for_math() -> None:
    check("math.ceil(x)", 2.0, x=Decimal("1.25"))
    check("math.greatest(x, 1)", Decimal("1.25"), x=Decimal("1.25"))
    check("sum([x, x])", 2.5, x=Decimal("1.25"))


# -- Warden's aggregates --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("sum([1, 2, 3])", 6),
        ("sum([1u, 2u])", UInt(3)),
        ("sum([1.5, 2.5])", 4.0),
        ("sum([1, 2.5])", 3.5),  # mixed int/double promotes, as `+` does in Warden
        ("sum([])", 0),
        ("sum([duration('1h'), duration('30m')]) == duration('90m')", True),
        ("[1, 2].sum()", 3),
        ("min([3, 1, 2])", 1),
        ("max([3, 1, 2])", 3),
        ("max(1, 2.5)", 2.5),
        ("min(4, 2, 8)", 2),
        ("min(['b', 'a'])", "a"),
        ("max([timestamp('2024-01-01T00:00:00Z'), timestamp('2025-01-01T00:00:00Z')]).getFullYear()", 2025),
        ("max([1, 1.0])", 1),  # the first of equal values
        ("min([1.0, 1])", 1.0),
        ("[3, 1].min()", 1),
        ("['a', 'c', 'b'].max()", "c"),
        ("min(5)", 5),
    ],
)  # fmt: skip
def test_aggregates(source: str, expected: Any) -> None:
    check(source, expected)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("sum([1, 'a'])", "element 1 is string; only numbers and durations add up"),
        ("sum([true])", "element 0 is bool"),
        ("sum([1, 1u])", r"no such overload: _\+_\(int, uint\)"),
        ("sum([9223372036854775807, 1])", "int overflow"),
        ("sum([1, duration('1s')])", "no such overload"),
        ("sum('abc')", r"no such overload: sum\(string\)"),
        ("max([])", "max: the list is empty"),
        ("min([1, 'a'])", "no such overload"),
        ("max([[1]])", r"no such overload: max\(list\)"),
        ("min({'a': 1})", r"no such overload: min\(map\)"),
        ("'ab'.max()", r"no such overload: max\(string\)"),
    ],
)
def test_aggregate_errors(source: str, message: str) -> None:
    fails(source, message)


# -- strings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'hello'.charAt(1)", "e"),
        ("'héllo'.charAt(1)", "é"),  # positions count code points, not bytes
        ("'hello mellow'.indexOf('ello', 2)", 7),
        ("'hello mellow'.lastIndexOf('ello')", 7),
        ("'hello mellow'.lastIndexOf('w', 12)", -1),  # an offset at the end finds nothing
        ("'a-b-c'.replace('-', '+')", "a+b+c"),
        ("'a-b-c'.replace('-', '+', 1)", "a+b-c"),
        ("'a-b-c'.replace('-', '+', -5)", "a+b+c"),
        ("'a,b,,c'.split(',')", ["a", "b", "", "c"]),
        ("'abc'.split('', 2)", ["a", "bc"]),
        ("''.split('')", []),
        ("''.split(',')", [""]),
        ("'tacocat'.substring(0, 4)", "taco"),
        ("'\\x1ftext '.trim()", "\x1ftext"),  # Go's white space, not Python's
        ("args.note.trim().lowerAscii()", "hello world"),
        ("args.tags.join(', ')", "b, a, c, a"),
        ("strings.quote('a\"b\\\\c')", '"a\\"b\\\\c"'),
        ("'héllo'.reverse()", "olléh"),
    ],
)
def test_strings(source: str, expected: Any) -> None:
    check(source, expected)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("'abc'.charAt(-1)", "index out of range: -1"),
        ("'abc'.charAt(1u)", r"no such overload: charAt\(string, uint\)"),
        ("'abc'.indexOf(1)", "no such overload"),
        ("'abc'.replace('a', 1)", "no such overload"),
        ("'abc'.split(',', 'x')", "no such overload"),
        ("'abc'.substring(-1, 2)", "index out of range: -1"),
        ("x.trim()", r"no such overload: trim\(int\)"),
        ("['a', 1].join()", "element 1 is int, not string"),
        ("['a'].join(1)", "no such overload"),
        ("'abc'.join()", "no such overload"),
        ("strings.quote(x)", r"no such overload: strings.quote\(int\)"),
        ("x.reverse()", r"no such overload: reverse\(int\)"),
    ],
)
def test_string_errors(source: str, message: str) -> None:
    fails(source, message, x=7)


def test_quote_replaces_lone_surrogates() -> None:
    check("strings.quote(x)", '"a\ufffd"', x="a\ud800")


# -- lists and sets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("[1, 2, 3, 4].slice(1, 3)", [2, 3]),
        ("[[1], [2, [3]]].flatten()", [1, 2, [3]]),
        ("[1, 1u, 1.0, 2].distinct()", [1, 2]),  # CEL equality: 1 == 1u == 1.0
        ("[true, 1, false, 0].distinct()", [True, 1, False, 0]),  # bools are not numbers
        ("args.tags.distinct()", ["b", "a", "c"]),
        ("args.tags.sort()", ["a", "a", "b", "c"]),
        ("[2.5, 1.0].sort()", [1.0, 2.5]),
        ("[true, false].sort()", [False, True]),
        ("[b'b', b'a'].sort()", [b"a", b"b"]),
        ("[3u, 1u].sort()", [UInt(1), UInt(3)]),
        ("args.tags.reverse()", ["a", "c", "a", "b"]),
        ("lists.range(-2)", []),
        ("[{'k': 2, 'v': 'x'}, {'k': 1, 'v': 'y'}, {'k': 2, 'v': 'z'}].sortBy(e, e.k).map(e, e.v)",
         ["y", "x", "z"]),  # stable: equal keys keep their order
        ("sets.contains(['read', 'write'], x)", True),
        ("sets.intersects(x, ['admin'])", False),
        ("sets.equivalent(x, ['write', 'read', 'read'])", True),
    ],
)  # fmt: skip
def test_lists(source: str, expected: Any) -> None:
    check(source, expected, x=["read", "write"])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("[1, 2].slice(0, 1u)", r"no such overload: slice\(list, int, uint\)"),
        ("'abc'.slice(0, 1)", "no such overload"),
        ("[1, 2.0].sort()", "element 0 is int, element 1 is double"),  # as cel-go: no mixing
        ("[[2], [1]].sort()", "list values cannot be ordered"),
        ("[1.0, 0.0 / 0.0].sort()", "NaN values cannot be ordered"),
        ("x.distinct()", r"no such overload: distinct\(string\)"),
        ("lists.range(1.0)", r"no such overload: lists.range\(double\)"),
        ("lists.range(100001)", "at most 100000 elements"),
        ("sets.contains([1], 1)", r"no such overload: sets.contains\(list, int\)"),
        ("[1, 'a'].sortBy(e, e)", "element 0 is int, element 1 is string"),
        ("[1, 2].sortBy(e, e / 0)", "division by zero"),
    ],
)
def test_list_errors(source: str, message: str) -> None:
    fails(source, message, x="s")


def test_results_are_fresh_lists() -> None:
    items = [3, 1, 2]
    for source in ("x.sort()", "x.reverse()", "x.slice(0, 3)", "x.distinct()", "x.flatten()"):
        result = ev(source, x=items)
        assert result is not items
    assert items == [3, 1, 2]


# -- the checker ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("summ(args.empty)", "unknown function 'summ'; did you mean 'sum'"),
        ("math.greatst(1, 2)", "unknown function 'math.greatst'; did you mean 'math.greatest'"),
        ("math.pi(1)", "unknown function 'math.pi'"),
        ("lists.rang(3)", "did you mean 'lists.range'"),
        ("'a'.charat(0)", "unknown method 'charat'; did you mean 'charAt'"),
        ("[1].sortby(e, e)", "did you mean 'sortBy'"),
        ("[1].greatest()", "'greatest' is a namespaced function: math.greatest"),
        ("charAt('a', 0)", "'charAt' must be called as a method"),
        ("'a'.quote()", "'quote' is a namespaced function: strings.quote"),
        ("[1].slice(1)", r"\.slice\(\) takes 2 arguments, got 1"),
        ("'a'.replace('a')", r"\.replace\(\) takes 2 or 3 arguments, got 1"),
        ("math.ceil(1.0, 2.0)", r"math.ceil\(\) takes 1 argument, got 2"),
        ("sum([1], [2])", r"sum\(\) takes 1 argument, got 2"),
        ("min()", r"min\(\) takes 1 or more arguments, got 0"),
        ("math.least()", r"math.least\(\) takes 1 or more arguments, got 0"),
        ("math.greatest('hello')", "takes numbers or one non-empty list of numbers"),
        ("math.least({})", "takes numbers or one non-empty list of numbers"),
        ("math.greatest([])", "takes numbers or one non-empty list of numbers"),
        ("math.greatest([1, true])", "takes numbers or one non-empty list of numbers"),
        ("math.least(1, 2, true)", "takes numbers; this argument is not one"),
        ("math.greatest(1, [2])", "takes numbers; this argument is not one"),
        ("[1].sortBy(1, 1)", "must be a variable name"),
        ("[1].sortBy(e)", r"\.sortBy\(\) takes 2 arguments, got 1"),
        ("math", "undeclared reference to 'math'"),
    ],
)
def test_unknown_and_misused_functions_fail_at_load(source: str, message: str) -> None:
    rejected(source, message)


def test_namespaced_call_errors_point_at_the_namespace() -> None:
    error = rejected("1 + math.nope(2)", "unknown function 'math.nope'")
    assert (error.line, error.column) == (1, 5)


def test_namespaced_calls_report_their_arguments_as_references() -> None:
    compiled = compile_expression("math.greatest(args.a, facts.b.c) > sum(args.list)", roots=ROOTS)
    assert compiled.references == {("args", "a"), ("facts", "b", "c"), ("args", "list")}


def test_a_root_named_like_a_namespace_keeps_its_methods() -> None:
    compiled = compile_expression("math.size() == 2 && math.greatest(1, 2) == 2", roots={"math"})
    assert compiled.evaluate({"math": {"a": 1, "b": 2}}) is True
    with pytest.raises(CelCompileError, match="unknown method 'nope'"):
        compile_expression("math.nope()", roots={"math"})


# -- the reference implementation (differential) --------------------------------------------

DIFFERENTIAL = [
    "args.payments.map(p, p.amount)", "args.payments.map(p, p.method == 'card', p.amount)",
    "args.payments.filter(p, p.amount > 5.0).size()", "args.payments.all(p, p.amount > 0.0)",
    "args.payments.exists(p, p.method == 'cash')", "args.payments.exists_one(p, p.method == 'cash')",
    "args.payments.map(p, p.nope)", "sum(args.payments.map(p, p.amount)) == facts.price.total",
    "sum([1, 2, 3])", "sum([1.5, 2.5])", "sum([])", "sum([1, 'a'])", "sum([true])",
    "max([1, 5, 3])", "min([3, 1, 2])", "min(['b', 'a'])", "max([])", "max(1, 2)", "min(4, 2, 8)",
    "math.greatest(1, 2)", "math.greatest([1, 5, 3])", "math.greatest(-42.0, -21.5, -100.0)",
    "math.least([-42.0, -21.5, -100.0])", "math.least(3, 1)", "math.greatest([])",
    "math.ceil(1.2)", "math.ceil(-1.2)", "math.floor(1.2)", "math.floor(-1.2)", "math.round(1.5)",
    "math.round(-1.5)", "math.round(2.5)", "math.trunc(-1.3)", "math.abs(-1)", "math.abs(-1.5)",
    "math.sign(-42)", "math.sign(0)", "math.sign(-2.5)", "math.sign(0.0)", "math.isInf(1.0/0.0)",
    "math.isNaN(0.0/0.0)", "math.isNaN(1.2)", "math.isFinite(0.0/0.0)", "math.isFinite(1.2)",
    "math.sqrt(81)", "math.sqrt(985.25)", "math.sqrt(-15)", "math.bitOr(1, 2)",
    "math.bitAnd(-3, -5)", "math.bitXor(1, 3)", "math.bitNot(1)", "math.bitShiftLeft(-1, 2)",
    "math.bitShiftRight(1024, 2)", "math.bitShiftLeft(1, 200)", "math.bitShiftLeft(1, -1)",
    "math.bitShiftRight(-1, 1)", "math.ceil('a')",
    "'hello'.charAt(4)", "'hello'.charAt(5)", "'hello'.charAt(-1)", "'hello'.charAt(6)",
    "'hello mellow'.indexOf('')", "'hello mellow'.indexOf('ello')", "'hello mellow'.indexOf('', 2)",
    "'hello mellow'.indexOf('ello', 2)", "'hello mellow'.indexOf('ello', -1)",
    "'hello mellow'.lastIndexOf('')", "'hello mellow'.lastIndexOf('ello')",
    "'hello mellow'.lastIndexOf('jello')", "'hello mellow'.lastIndexOf('ello', 6)",
    "'hello mellow'.lastIndexOf('ello', -1)", "'hello mellow'.lastIndexOf('w', 11)",
    "'TacoCat'.lowerAscii()", "'TacoCÆt Xii'.upperAscii()", "'hello hello'.replace('he', 'we')",
    "'hello hello'.replace('he', 'we', 1)", "'hello hello'.replace('he', 'we', 0)",
    "'abc'.replace('', '-')", "'hello hello hello'.split(' ')", "'hello hello hello'.split(' ', 0)",
    "'hello hello hello'.split(' ', 2)", "'hello hello hello'.split(' ', -1)", "'abc'.split('')",
    "''.split(',')", "''.split('')", "'tacocat'.substring(4)", "'tacocat'.substring(0, 4)",
    "'tacocat'.substring(-1)", "'tacocat'.substring(2, 1)", "'tacocat'.substring(8)",
    "'  \\ttrim\\n    '.trim()", "args.note.trim()", "['hello', 'mellow'].join()",
    "['hello', 'mellow'].join(' ')", "[].join('/')", "args.tags.join(',')",
    "strings.quote('single-quote with \"double quote\"')", "strings.quote(\"escapes \\a\\n\")",
    "'gums'.reverse()", "[1, 2, 2, 3, 3, 3].distinct()", "[1, \"b\", 2, \"b\"].distinct()",
    "args.tags.distinct()", "[1,[2,3],[4]].flatten()", "[1,[2,[3,4]]].flatten()",
    "[1,[2,[3,[4]]]].flatten(2)", "[1,[2,[3,[4]]]].flatten(-1)", "lists.range(5)", "lists.range(0)",
    "[5, 3, 1, 2].reverse()", "[1,2,3,4].slice(1, 3)", "[1,2,3,4].slice(3, 2)",
    "[1,2,3,4].slice(0, 5)", "[1,2,3,4].slice(-1, 2)", "[3, 2, 1].sort()", "args.tags.sort()",
    "[1, \"b\"].sort()", "sets.contains([], [1])", "sets.contains([1, 2.0, 3u], [1.0, 2u, 3])",
    "sets.equivalent([1], [1, 1])", "sets.equivalent([1, 2, 3], [3u, 2.0, 1])",
    "sets.intersects([1], [])", "sets.intersects([[1], [2, 3]], [[1, 2], [2, 3.0]])",
]  # fmt: skip

# Where the reference's extended library departs from cel-go; what we return instead.
REFERENCE_DEVIATIONS: dict[str, tuple[str, Any]] = {
    "math.abs(-9223372036854775808)": ("the reference returns 2**63, outside int64", CelError),
    "'hello mellow'.indexOf('ello', 20)": (
        "the reference raises for an offset past the end; cel-go returns -1",
        -1,
    ),
    "'hello mellow'.lastIndexOf('ello', 20)": (
        "the reference raises for an offset past the end; cel-go returns -1",
        -1,
    ),
    "'hello mellow'.lastIndexOf('w', 12)": (
        "cel-go finds nothing from an offset at the end; the reference searches",
        -1,
    ),
    "[true, 1].distinct()": ("the reference compares with Python ==, so true == 1", [True, 1]),
    "sum([1, 1u])": ("the reference cannot tell uint from int", CelError),
    "'a\\x1fb\\x1f'.trim()": ("the reference strips Python's white space", "a\x1fb\x1f"),
}


def _canonical(value: Any) -> Any:
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):  # the reference returns uints as ints
        return ("int", int(value))
    if isinstance(value, float):
        return ("double", "nan" if math.isnan(value) else value)
    if isinstance(value, list):
        return ("list", tuple(_canonical(v) for v in value))
    return (type(value).__name__, value)


@pytest.fixture(scope="module")
def reference() -> Any:
    cel = pytest.importorskip("cel")
    stdlib = pytest.importorskip("cel.stdlib")

    def evaluate(source: str) -> Any:
        context = cel.Context(variables=dict(CONTEXT))
        stdlib.add_stdlib_to_context(context)
        try:
            return cel.evaluate(source, context)
        except Exception as error:  # ValueError, TypeError, RuntimeError, ...
            return error

    return evaluate


@pytest.mark.parametrize("source", DIFFERENTIAL)
def test_agrees_with_the_reference(source: str, reference: Any) -> None:
    try:
        mine: Any = ev(source)
    except CelError as error:
        mine = error
    theirs = reference(source)
    if isinstance(mine, Exception) or isinstance(theirs, Exception):
        assert isinstance(mine, CelError) and isinstance(theirs, Exception), (mine, theirs)
    else:
        assert _canonical(mine) == _canonical(theirs)


@pytest.mark.parametrize(("source", "why"), [(s, w) for s, (w, _) in REFERENCE_DEVIATIONS.items()])
def test_reference_deviations_are_real(source: str, why: str, reference: Any) -> None:
    """Each listed deviation still exists (else it belongs in DIFFERENTIAL)."""
    expected = REFERENCE_DEVIATIONS[source][1]
    theirs = reference(source)
    if expected is CelError:
        assert not isinstance(theirs, Exception), why
    else:
        assert isinstance(theirs, Exception) or _canonical(theirs) != _canonical(expected), why


@pytest.mark.parametrize(
    ("source", "expected"), [(s, e) for s, (_, e) in REFERENCE_DEVIATIONS.items()]
)
def test_reference_deviations_follow_cel_go(source: str, expected: Any) -> None:
    if expected is CelError:
        with pytest.raises(CelEvalError):
            ev(source)
    else:
        check(source, expected)


# -- in a policy ----------------------------------------------------------------------------

SPEC = """\
name: checkout
version: "1"
owner: tests@example.com
tier: autonomous
tools:
  get_price: {effect: read}
  pay: {effect: money}
facts:
  price:
    tool: get_price
    args: {order_id: args.order_id}
policies:
  - name: payments_cover_the_price
    when: >-
      tool.name == "pay" &&
      !(sum(args.payments.map(p, p.amount)) == facts.price.total)
    effect: deny
    reason: the payments do not add up to the price
  # autonomous: a money tool runs alone only under an allow rule (its threshold)
  - name: checkout_pays_alone
    when: tool.name == "pay"
    effect: allow
    reason: checkout payments need no human once they cover the price
"""


def _decide(policy: Policy, payments: list[dict[str, Any]], total: Any) -> Any:
    activation = {
        "tool": {"name": "pay"},
        "args": {"order_id": "o1", "payments": payments},
        "facts": {"price": {"total": total}},
    }
    return policy.decide(policy.for_tool("pay"), EffectClass.MONEY, Tier.AUTONOMOUS, activation)


def test_a_rule_sums_the_payments_against_the_price() -> None:
    policy = Policy(load_spec_text(SPEC, "checkout.yaml"))
    allowed = _decide(policy, PAYMENTS, 20.0)
    assert allowed.effect.value == "allow" and allowed.matched == ("checkout_pays_alone",)
    short = _decide(policy, PAYMENTS[:2], 20.0)
    assert short.effect.value == "deny" and short.rules == ("payments_cover_the_price",)
    # A malformed payment makes the rule fail, and the decision fails closed.
    broken = _decide(policy, [*PAYMENTS, {"amount": "5"}], 25.0)
    assert broken.effect.value == "deny"
    assert "could not be evaluated" in broken.reasons[0] and "string" in broken.reasons[0]


def test_a_misspelled_function_in_a_rule_fails_the_load() -> None:
    with pytest.raises(SpecError) as info:
        Policy(load_spec_text(SPEC.replace("sum(", "summ("), "checkout.yaml"))
    (issue,) = info.value.issues
    assert "checkout.yaml:" in str(issue) and "did you mean 'sum'" in str(issue)
