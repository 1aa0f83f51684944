"""What rules read besides the action: named variables, chained facts, window keys.

Each is a CEL expression compiled once at load. Variables and facts may use one another
(a variable ``variables.x``, a fact ``facts.y``); their references form a graph that must
be acyclic, checked at load and reported with the line of an expression on the cycle.
Variables are evaluated lazily, at most once per decision, and only for the tools whose
rules use them: a rule that names no variable pays nothing for them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from warden.errors import CelError, CelEvalError
from warden.ledger._canonical import canonical_json
from warden.policy.cel import CompiledExpression
from warden.spec import WindowSpec

#: A bare name such as ``customer_id`` in a window's ``group_by``/``field``: an argument.
BARE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def names_under(expr: CompiledExpression, root: str) -> frozenset[str]:
    """The names an expression selects under ``root`` (``facts.order.id`` -> ``order``)."""
    return frozenset(ref[1] for ref in expr.references if ref[0] == root and len(ref) > 1)


def uses_whole(expr: CompiledExpression, root: str) -> bool:
    """Whether ``root`` is used other than by selecting a name under it."""
    return (root,) in expr.references


def find_cycle(graph: Mapping[str, frozenset[str]]) -> list[str] | None:
    """A cycle of ``graph`` (node -> the nodes it uses) as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, frozenset())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found is not None:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found is not None:
                return found
    return None


def dependency_order(graph: Mapping[str, frozenset[str]]) -> list[str]:
    """Every node after the nodes it uses (``graph`` must be acyclic), ties by spec order."""
    done: list[str] = []
    seen: set[str] = set()

    def visit(node: str) -> None:
        if node in seen:
            return
        seen.add(node)
        for nxt in sorted(graph.get(node, frozenset())):
            if nxt in graph:
                visit(nxt)
        done.append(node)

    for node in graph:
        visit(node)
    return done


def closure(start: frozenset[str], graph: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """``start`` and everything it uses, transitively."""
    out = set(start)
    stack = list(start)
    while stack:
        for nxt in graph.get(stack.pop(), frozenset()):
            if nxt not in out:
                out.add(nxt)
                stack.append(nxt)
    return frozenset(out)


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: CelError) -> None:
        self.error = error


class LazyVariables(Mapping[str, Any]):
    """``variables`` as rules see it: each name evaluated on first use, then remembered.

    An evaluation error is remembered too, and raised to every rule that uses the
    variable, so each of them fails closed with the same reason.
    """

    __slots__ = ("_activation", "_exprs", "_values")

    def __init__(
        self,
        exprs: Mapping[str, Callable[[Mapping[str, Any]], Any]],
        activation: Mapping[str, Any],
    ) -> None:
        self._exprs = exprs
        self._activation = activation
        self._values: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        try:
            value = self._values[name]
        except KeyError:
            fn = self._exprs[name]  # undeclared names are load errors
            try:
                value = fn(self._activation)
            except CelError as exc:
                value = _Failed(
                    CelEvalError(f"variable {name!r} could not be evaluated: {exc}")
                )
            self._values[name] = value
        if type(value) is _Failed:
            raise value.error
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._exprs)

    def __len__(self) -> int:
        return len(self._exprs)

    def evaluated(self) -> dict[str, Any]:
        """The variables evaluated so far (errors left out), for the decision record."""
        return {k: v for k, v in self._values.items() if type(v) is not _Failed}


class WindowKeyError(Exception):
    """A window's group or field could not be computed for a call: the call is denied."""

    def __init__(self, window: str, detail: str) -> None:
        super().__init__(f"window {window!r}: {detail}")
        self.window = window


@dataclass(frozen=True, slots=True)
class CompiledWindow:
    """A window with its group and field expressions compiled."""

    name: str
    spec: WindowSpec
    tools: tuple[str, ...]
    group_by: CompiledExpression | None
    field: CompiledExpression | None
    #: the facts its expressions read (looked up before the window is read or recorded)
    facts: frozenset[str]
    #: whether its expressions read ``now``
    now: bool = False

    def group_of(self, activation: Mapping[str, Any]) -> str:
        """The group key of the call in ``activation`` (``*``: the window has one group)."""
        if self.group_by is None:
            return "*"
        try:
            value = self.group_by.evaluate(activation)
        except CelError as exc:
            raise WindowKeyError(self.name, f"group_by could not be evaluated ({exc})") from None
        if value is None:
            raise WindowKeyError(self.name, "group_by gave null")
        text = value if type(value) is str else canonical_json(_plain(value))
        # Keys are stored in a 200-character column: a longer one is stored as its hash.
        if len(text) > 120:
            text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return text

    def entry_of(self, activation: Mapping[str, Any]) -> tuple[float, str | None]:
        """What one action adds: (value, distinct item) for the window's aggregate."""
        aggregate = self.spec.aggregate
        if self.field is None:
            return 1.0, None
        try:
            value = self.field.evaluate(activation)
        except CelError as exc:
            raise WindowKeyError(self.name, f"field could not be evaluated ({exc})") from None
        if aggregate == "count":
            return 1.0, None
        if aggregate == "count_distinct":
            if value is None:
                raise WindowKeyError(self.name, "field gave null, which count_distinct cannot count")
            item = hashlib.sha256(canonical_json(_plain(value)).encode()).hexdigest()
            return 1.0, item
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise WindowKeyError(
                self.name,
                f"field gave {type(value).__name__}, expected a number to {aggregate}",
            )
        return float(value), None


def _plain(value: Any) -> Any:
    """A JSON-able form of a CEL value, for keys: numbers of equal value are one key."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        number = float(value)
        return int(number) if number.is_integer() else number
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)
