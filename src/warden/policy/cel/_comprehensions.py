"""Closures for the comprehension macros: all, exists, exists_one, map, filter and sortBy.

The variable is bound in a copy of the activation made once per evaluation of the macro,
so compiled expressions never share mutable state between evaluations or threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from warden.policy.cel._lists import sort_by_keys
from warden.policy.cel._operators import Fn
from warden.policy.cel._values import no_overload, type_name

Predicate = Fn | None


def _items(value: Any, macro: str) -> Iterable[Any]:
    kind = type_name(value)
    if kind == "list":
        items: Iterable[Any] = value
        return items
    if kind == "map":
        return list(value)  # iterate over a snapshot of the keys
    raise no_overload(macro, value)


def _all(kind: str, range_: Fn, var: str, predicate: Predicate, _: Predicate) -> Fn:
    assert predicate is not None
    return _quantifier(range_, var, predicate, False, "all")


def _exists(kind: str, range_: Fn, var: str, predicate: Predicate, _: Predicate) -> Fn:
    assert predicate is not None
    return _quantifier(range_, var, predicate, True, "exists")


def _quantifier(range_: Fn, var: str, predicate: Fn, decisive: bool, macro: str) -> Fn:
    """all() and exists(): like a chain of &&/||, a decisive result absorbs errors."""
    win, other = decisive, not decisive

    def quantifier(a: Mapping[str, Any]) -> bool:
        items = _items(range_(a), macro)
        env = dict(a)
        error: Exception | None = None
        for item in items:
            env[var] = item
            try:
                x = predicate(env)
            except Exception as failure:
                error = failure
                continue
            if x is decisive:
                return win
            if x is not other:
                error = no_overload(macro, x)
        if error is not None:
            raise error
        return other

    return quantifier


def _exists_one(kind: str, range_: Fn, var: str, predicate: Predicate, _: Predicate) -> Fn:
    assert predicate is not None

    def exists_one(a: Mapping[str, Any]) -> bool:
        env = dict(a)
        count = 0
        for item in _items(range_(a), "exists_one"):
            env[var] = item
            x = predicate(env)
            if x is True:
                count += 1
            elif x is not False:
                raise no_overload("exists_one", x)
        return count == 1

    return exists_one


def _map(kind: str, range_: Fn, var: str, predicate: Predicate, transform: Predicate) -> Fn:
    assert transform is not None

    def map_(a: Mapping[str, Any]) -> list[Any]:
        env = dict(a)
        out = []
        for item in _items(range_(a), "map"):
            env[var] = item
            if predicate is not None:
                keep = predicate(env)
                if keep is False:
                    continue
                if keep is not True:
                    raise no_overload("map", keep)
            out.append(transform(env))
        return out

    return map_


def _filter(kind: str, range_: Fn, var: str, predicate: Predicate, _: Predicate) -> Fn:
    assert predicate is not None

    def filter_(a: Mapping[str, Any]) -> list[Any]:
        env = dict(a)
        out = []
        for item in _items(range_(a), "filter"):
            env[var] = item
            keep = predicate(env)
            if keep is True:
                out.append(item)
            elif keep is not False:
                raise no_overload("filter", keep)
        return out

    return filter_


def _sort_by(kind: str, range_: Fn, var: str, _: Predicate, key: Predicate) -> Fn:
    """cel-go's ``list.sortBy(x, key)``: the list ordered by each element's key."""
    assert key is not None

    def sort_by(a: Mapping[str, Any]) -> list[Any]:
        items = range_(a)
        if type_name(items) != "list":
            raise no_overload("sortBy", items)
        env = dict(a)
        keys = []
        for item in items:
            env[var] = item
            keys.append(key(env))
        return sort_by_keys("sortBy", items, keys)

    return sort_by


COMPREHENSIONS: dict[str, Callable[[str, Fn, str, Predicate, Predicate], Fn]] = {
    "all": _all,
    "exists": _exists,
    "exists_one": _exists_one,
    "map": _map,
    "filter": _filter,
    "sortBy": _sort_by,
}
