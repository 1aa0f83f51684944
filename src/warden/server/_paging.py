"""Cursor pagination for the list endpoints, and the refusal of unknown query parameters.

A cursor is the sort key of the last item a page held, as base64url JSON: opaque to
clients, the same on every replica (it names data, not a server's memory), and stable under
inserts (keyset pagination never repeats or skips an item that was there all along). Each
list answers ``next`` in its body (null on the last page) and a ``Link: <...>; rel="next"``
header.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from warden.server._problems import ApiProblem

T = TypeVar("T")

After = Annotated[
    str | None,
    Query(
        max_length=400,
        description="Resume after this cursor: the `next` of the previous page (opaque).",
    ),
]


def encode_cursor(key: Sequence[str | int | float | None]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, width: int) -> list[Any] | None:
    """The sort key a cursor holds; 422 naming ``after`` for anything this server did not
    hand out (wrong shape, wrong width)."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
        if not isinstance(key, list) or len(key) != width:
            raise ValueError("wrong shape")
        if not all(isinstance(k, str | int | float) or k is None for k in key):
            raise ValueError("wrong shape")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _bad_cursor(cursor) from None
    return key


def _bad_cursor(cursor: str) -> ApiProblem:
    detail = f"after={cursor[:40]!r} is not a cursor of this list (use the `next` of a page)"
    return ApiProblem(
        422,
        "validation",
        detail,
        errors=[{"loc": ["query", "after"], "msg": detail, "type": "value_error"}],
    )


def page_of(
    items: Sequence[T], limit: int, key: Callable[[T], Sequence[str | int | float | None]]
) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``items`` (fetched with one more than ``limit``, so a full
    last page is told from a page with more behind it) and the cursor after them."""
    if len(items) <= limit:
        return list(items), None
    kept = list(items[:limit])
    return kept, encode_cursor(key(kept[-1]))


def link_next(request: Request, response: Response, cursor: str | None) -> None:
    """``Link: <this URL with after=cursor>; rel="next"`` when there is a next page."""
    if cursor is None:
        return
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
    params.append(("after", cursor))
    response.headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'


def in_memory_page(
    items: Sequence[T],
    after: str | None,
    limit: int,
    key: Callable[[T], tuple[str, ...]],
    width: int,
) -> tuple[list[T], str | None]:
    """Keyset pagination of a small list already in memory, sorted by ``key`` (``width``
    strings)."""
    ordered = sorted(items, key=key)
    start = decode_cursor(after, width)
    if start is not None:
        if not all(isinstance(k, str) for k in start):
            raise _bad_cursor(str(after))
        marker = tuple(start)
        ordered = [i for i in ordered if key(i) > marker]
    return page_of(ordered, limit, key)


# -- unknown query parameters -----------------------------------------------------------


# Endpoints that mirror another vendor's API (the model proxy): their clients add query
# parameters Warden does not control (Anthropic's SDK sends ``?beta=true``), so these
# accept any query and read none of it.
_ANY_QUERY: set[Callable[..., Any]] = set()

F = TypeVar("F", bound=Callable[..., Any])


def any_query(endpoint: F) -> F:
    """Mark a route's endpoint as accepting query parameters it does not declare."""
    _ANY_QUERY.add(endpoint)
    return endpoint


#: the operator console's pages (warden.server.ui), which are not the API
CONSOLE_PREFIX = "/ui"


async def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not declare, naming it (an app-wide
    dependency: every route, one place). Costs nothing for a request without a query
    string; otherwise the route's declared names come from a per-route cache."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.endpoint in _ANY_QUERY:
        return
    if route.path.startswith(CONSOLE_PREFIX):
        # The console's pages read their own parameters (a redirect's ``next``, a
        # decision's ``done``) and, as web pages do, ignore what they do not know.
        return
    allowed = _declared(route)
    unknown = [k for k in dict.fromkeys(request.query_params.keys()) if k not in allowed]
    if not unknown:
        return
    names = ", ".join(repr(n) for n in unknown)
    raise ApiProblem(
        422,
        "unknown-query-parameter",
        f"unknown query parameter{'s' if len(unknown) > 1 else ''} {names}",
        errors=[
            {"loc": ["query", n], "msg": "not a parameter of this endpoint",
             "type": "unknown_parameter"}
            for n in unknown
        ],
    )


# id(route) -> (route, its query parameter names); routes are not hashable, and the
# identity check keeps a recycled id from answering for another app's route.
_NAMES: dict[int, tuple[APIRoute, frozenset[str]]] = {}


def _declared(route: APIRoute) -> frozenset[str]:
    found = _NAMES.get(id(route))
    if found is not None and found[0] is route:
        return found[1]
    names: set[str] = set()
    pending: list[Dependant] = [route.dependant]
    while pending:  # the route's own parameters and those of every dependency
        current = pending.pop()
        names.update(p.alias for p in current.query_params)
        pending.extend(current.dependencies)
    made = frozenset(names)
    if len(_NAMES) > 4096:  # apps made and dropped (tests): forget the old ones
        _NAMES.clear()
    _NAMES[id(route)] = (route, made)
    return made
