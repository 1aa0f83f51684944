"""The cel-go lists and sets extensions (``ext.Lists``, ``ext.Sets``), and ``reverse``.

Semantics follow cel-go's ``ext/lists.go`` and ``ext/sets.go``: indexes are ints and a
negative or out-of-range one is an error; ``sort`` (and the ``sortBy`` macro, whose
closure lives in ``_comprehensions``) needs elements of one orderable type; ``distinct``
and the set tests use CEL equality, so ``1``, ``1u`` and ``1.0`` are the same element.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from warden.policy.cel._values import (
    DURATION,
    TIMESTAMP,
    as_number,
    cel_eq,
    contains,
    fail,
    no_overload,
    type_name,
)

#: ``lists.range(n)`` refuses larger n: a policy has no business building such a list,
#: and cel-go relies on cost limits, which Warden does not have, to stop it.
RANGE_LIMIT = 100_000

_SORTABLE = frozenset({"int", "uint", "double", "bool", "string", "bytes", TIMESTAMP, DURATION})


def _is_list(value: Any) -> bool:
    return type(value) is list or type_name(value) == "list"


def _is_int(value: Any) -> bool:
    return type(value) is int or type_name(value) == "int"


def slice_(items: Any, start: Any, end: Any) -> list[Any]:
    """``[1, 2, 3, 4].slice(1, 3)`` is ``[2, 3]``: positions ``start`` to ``end`` (exclusive)."""
    if not (_is_list(items) and _is_int(start) and _is_int(end)):
        raise no_overload("slice", items, start, end)
    if start < 0 or end < 0:
        fail(f"slice({start}, {end}): negative indexes are not supported")
    if start > end:
        fail(f"slice({start}, {end}): the start index must not be after the end index")
    if end > len(items):
        fail(f"slice({start}, {end}): the list has only {len(items)} elements")
    return list(items[start:end])


def flatten(items: Any, depth: Any = 1) -> list[Any]:
    """``[1, [2, [3]]].flatten()`` is ``[1, 2, [3]]``; ``flatten(2)`` goes two levels deep."""
    if not (_is_list(items) and _is_int(depth)):
        raise no_overload("flatten", items, depth)
    if depth < 0:
        fail(f"flatten({depth}): the depth must not be negative")
    return _flatten(items, int(depth))


def _flatten(items: Sequence[Any], depth: int) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if depth > 0 and _is_list(item):
            out.extend(_flatten(item, depth - 1))
        else:
            out.append(item)
    return out


def distinct(items: Any) -> list[Any]:
    """The elements in first-seen order without repeats, by CEL equality."""
    if not _is_list(items):
        raise no_overload("distinct", items)
    if all(type(item) is str for item in items):
        return list(dict.fromkeys(items))
    out: list[Any] = []
    for item in items:
        if not any(cel_eq(item, seen) for seen in out):
            out.append(item)
    return out


def reverse(value: Any) -> Any:
    """A list's elements, or a string's characters, in reverse order."""
    kind = type_name(value)
    if kind == "list":
        return list(value)[::-1]
    if kind == "string":
        return str(value)[::-1]
    raise no_overload("reverse", value)


def sort(items: Any) -> list[Any]:
    """``[3, 1, 2].sort()`` is ``[1, 2, 3]``; elements must share one orderable type."""
    if not _is_list(items):
        raise no_overload("sort", items)
    return sort_by_keys("sort", items, items)


def sort_by_keys(name: str, items: Sequence[Any], keys: Sequence[Any]) -> list[Any]:
    """``items`` ordered by the matching ``keys`` (stable: equal keys keep their order)."""
    if not keys:
        return []
    kind = type_name(keys[0])
    if kind not in _SORTABLE:
        fail(f"{name}: {kind} values cannot be ordered")
    for position, key in enumerate(keys):
        other = type_name(key)
        if other != kind:
            fail(
                f"{name}: the values to order must have one type; "
                f"element 0 is {kind}, element {position} is {other}"
            )
        if kind == "double" and key != key:
            fail(f"{name}: NaN values cannot be ordered (element {position})")
    order = sorted(range(len(keys)), key=lambda i: as_number(keys[i]))
    return [items[i] for i in order]


def lists_range(n: Any) -> list[int]:
    """``lists.range(3)`` is ``[0, 1, 2]``; a negative n gives ``[]``."""
    if not _is_int(n):
        raise no_overload("lists.range", n)
    if n > RANGE_LIMIT:
        fail(f"lists.range({n}): Warden builds at most {RANGE_LIMIT} elements")
    return list(range(int(n)))


# -- sets -----------------------------------------------------------------------------


def _two_lists(name: str, a: Any, b: Any) -> None:
    if not (_is_list(a) and _is_list(b)):
        raise no_overload(name, a, b)


def sets_contains(a: Any, b: Any) -> bool:
    """Whether every element of ``b`` is in ``a``."""
    _two_lists("sets.contains", a, b)
    return all(contains(item, a) for item in b)


def sets_equivalent(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` hold the same elements, repeats and order aside."""
    _two_lists("sets.equivalent", a, b)
    return all(contains(item, b) for item in a) and all(contains(item, a) for item in b)


def sets_intersects(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` share at least one element."""
    _two_lists("sets.intersects", a, b)
    return any(contains(item, b) for item in a)
