"""The agent under test for the refund-triage suite: the demo's own scripted agent
(``../agent.py``, without model calls) working the case's ticket; a case whose input
lists ``steps`` is replayed call by call by ``warden.testing.ScriptedAgent``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from warden import Allowed, Run
from warden.evals import Case
from warden.testing import ScriptedAgent


def _demo_agent() -> ModuleType:
    name = "warden_example_refund_triage_agent"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parents[1] / "agent.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


async def work(case: Case, run: Run) -> dict[str, Any]:
    """What the agent did, as the output the suite's cases may check."""
    data = case.input or {}
    if "steps" in data:
        results = await ScriptedAgent([(s["tool"], s.get("args", {})) for s in data["steps"]]).run(
            run
        )
        return {"calls": len(results), "executed": sum(isinstance(r, Allowed) for r in results)}
    outcome = await _demo_agent().work_ticket(run, data["ticket_id"], data["kind"], models=False)
    return {
        "ticket": outcome.ticket_id,
        "calls": [tool for tool, _ in outcome.results],
        "executed": sum(isinstance(r, Allowed) for _, r in outcome.results),
    }
