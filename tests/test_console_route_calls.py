"""The console's pages call the /v1 route functions directly (so authorization is the
API's own code). A route parameter declared with ``Query(...)`` and not passed by the page
would arrive as the ``FieldInfo`` object itself, a truthy "filter": every such parameter
must be passed at every call site. This test reads the console's source and fails when a
route gains a parameter a page does not pass."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from fastapi.params import Depends as DependsParam
from pydantic.fields import FieldInfo

from warden.server import api
from warden.server.ui import _approvals, _dashboards, _pages

UI = [_approvals, _dashboards, _pages]


def _missing(source: str, where: str) -> tuple[int, list[str]]:
    """(route calls checked, the declared parameters they leave out) in ``source``."""
    checked, missing = 0, []
    for node in ast.walk(ast.parse(source)):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and hasattr(api, node.func.value.id)
        ):
            continue
        owner, name = node.func.value.id, node.func.attr
        fn = getattr(getattr(api, owner), name, None)
        if fn is None or not callable(fn) or any(k.arg is None for k in node.keywords):
            continue  # not a route function, or **kwargs (cannot tell)
        params = list(inspect.signature(fn).parameters.values())
        passed = {p.name for p in params[: len(node.args)]} | {k.arg for k in node.keywords}
        checked += 1
        for p in params:
            declared = isinstance(p.default, FieldInfo) and not isinstance(p.default, DependsParam)
            if declared and p.name not in passed:
                missing.append(f"{where}:{node.lineno} {owner}.{name}({p.name}=...)")
    return checked, missing


def test_every_declared_parameter_of_a_called_route_is_passed() -> None:
    checked, missing = 0, []
    for module in UI:
        n, found = _missing(Path(inspect.getfile(module)).read_text(), module.__name__)
        checked += n
        missing += found
    assert checked >= 10  # the pages' calls were found
    assert missing == []


def test_the_check_sees_a_parameter_left_out() -> None:
    """The check itself can fail: ``list_runs`` called without its ``status`` query."""
    source = "runs.list_runs(a, b, c, d, tenant=None, workflow=None, limit=5, after=None)"
    assert _missing(source, "x") == (1, ["x:1 runs.list_runs(status=...)"])
