"""The environment of the refund-triage suite: the demo's helpdesk (customers, payment
methods, orders, tickets, refunds, messages, escalations) in a fresh SQLite database per
case, with the demo's own tools reaching the current case's database."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import Engine

from warden.evals import SQLiteEnvironment


def _helpdesk() -> ModuleType:
    name = "warden_example_refund_triage_helpdesk"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parents[1] / "helpdesk.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def make_environment() -> SQLiteEnvironment:
    helpdesk = _helpdesk()

    class CaseDesk(helpdesk.Helpdesk):  # type: ignore[misc,name-defined]
        """The helpdesk's tools over whichever database the environment holds now."""

        def __init__(self, env: SQLiteEnvironment) -> None:
            self._env = env

        @property
        def engine(self) -> Engine:
            return self._env.engine

    def tools(env: SQLiteEnvironment) -> list[Any]:
        found: list[Any] = CaseDesk(env).tools()
        return found

    return SQLiteEnvironment(helpdesk.SCHEMA, tools)
