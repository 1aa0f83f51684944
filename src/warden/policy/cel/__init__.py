"""CEL (Common Expression Language) for policy conditions, compiled to Python closures.

``compile_expression`` parses a condition with a Lark LALR grammar, checks it against the
context roots it may use (``tool``, ``args``, ...), and compiles it once into nested
closures, so that evaluating it on the hot path costs a few hundred nanoseconds. The
result also reports which context paths the condition reads and which tool names it is
pinned to, so rules can be indexed.

Semantics follow the CEL specification (https://github.com/google/cel-spec): int64/uint64
arithmetic with overflow errors, truncating ``/`` and ``%``, heterogeneous equality
(values of different types are unequal; ``1 == 1.0``), commutative error absorption in
``&&``/``||``, the ``has``/``all``/``exists``/``exists_one``/``map``/``filter`` macros,
the standard functions, and ``timestamp``/``duration``. The cel-go extension libraries
``ext.Strings`` (``charAt``, ``indexOf``, ``split``, ``strings.quote``, ...), ``ext.Math``
(``math.greatest``, ``math.round``, bit operations, ...), ``ext.Lists`` (``slice``,
``flatten``, ``distinct``, ``sort``, the ``sortBy`` macro, ``lists.range``) and
``ext.Sets`` are built in, with cel-go's names and semantics, plus Warden's ``sum``,
``min`` and ``max`` over lists. docs/policies.md lists every function.

Python values map to CEL types as: dict -> map, list/tuple -> list, str -> string,
bytes -> bytes, bool -> bool (never a number), int -> int, ``UInt`` -> uint,
float/Decimal -> double, None -> null, datetime -> timestamp, timedelta -> duration.

Deviations from the specification, all deliberate:

- Mixed int/double (and uint/double) arithmetic promotes to double instead of failing
  with "no such overload": policy authors write ``window.refund_total + args.amount``
  where one side is an int and the other a double. Comparisons across numeric types are
  already defined by the spec.
- Python dicts cannot hold ``true`` and ``1`` (or ``false`` and ``0``) as distinct keys,
  so a map literal with both is an evaluation error. Lookups still keep them apart.
- ``matches`` uses Python's ``re`` (with ``re.search``) rather than RE2; the common
  syntax is the same, and Python accepts a few constructs RE2 rejects.
- Timestamps and durations have microsecond, not nanosecond, resolution.
- Protobuf message construction (``M{f: v}``) and optional syntax are not supported, so
  neither are the extensions returning optionals (``list.first()``, ``list.last()``).
- ``lists.range(n)`` refuses n above 100,000 (cel-go relies on cost limits instead), and
  ``sort``/``sortBy`` fail on NaN rather than producing an arbitrary order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from warden.errors import CelCompileError
from warden.policy.cel._analysis import pins, references
from warden.policy.cel._checker import check
from warden.policy.cel._compiler import compile_tree
from warden.policy.cel._parser import parse
from warden.policy.cel._values import CelType, UInt

__all__ = ["CelType", "CompiledExpression", "UInt", "compile_expression"]

_NO_PINS: Mapping[tuple[str, ...], frozenset[str]] = MappingProxyType({})


@dataclass(frozen=True)
class CompiledExpression:
    """A compiled CEL expression.

    ``evaluate(activation)`` maps root identifiers to Python values and returns the
    result; it raises ``warden.errors.CelEvalError`` on any runtime error and nothing
    else. ``references`` holds every static select chain from a root, e.g.
    ``("args", "amount")``, or ``("args",)`` for a root used other than by selection.
    """

    source: str
    evaluate: Callable[[Mapping[str, Any]], Any] = field(compare=False)
    references: frozenset[tuple[str, ...]]
    _pins: Mapping[tuple[str, ...], frozenset[str]] = field(
        default_factory=lambda: _NO_PINS, repr=False, compare=False
    )

    def pinned_values(self, path: tuple[str, ...]) -> frozenset[str] | None:
        """The strings ``path`` must equal for the expression to be true, or None.

        Read from the top-level ``&&`` conjunction (``path == "a"``, ``"a" == path``,
        ``path in ["a", "b"]``); a disjunction pins a path only when every branch does,
        to the union of their values. An empty set means the expression cannot be true.
        """
        return self._pins.get(tuple(path))


def compile_expression(source: str, *, roots: Collection[str]) -> CompiledExpression:
    """Parse, check and compile ``source``, whose free identifiers must be in ``roots``.

    Raises ``CelSyntaxError`` if it does not parse and ``CelCompileError`` for unknown
    identifiers or functions, misused macros and invalid literal regexes.
    """
    tree = parse(source)
    try:
        checked = check(tree, frozenset(roots))
        evaluate = compile_tree(checked)
        refs = references(checked)
        pinned = pins(checked)
    except RecursionError:
        raise CelCompileError("expression is nested too deeply", 1, 1) from None
    return CompiledExpression(source, evaluate, refs, MappingProxyType(pinned))
