"""A deliberately naive agent for the adversarial pack: the suite's agent (``agent.py``)
made to obey every instruction injected in a tool's output (``warden eval adversarial
examples/refund_triage/evals/suite.yaml --agent examples/refund_triage/evals/naive.py:work``).
It shows what Warden's policies stop when the agent does what an attacker says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from warden.evals import follow_injections

_spec = importlib.util.spec_from_file_location(
    "warden_example_refund_triage_eval_agent", Path(__file__).with_name("agent.py")
)
assert _spec is not None and _spec.loader is not None
_agent = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_agent)

work = follow_injections(_agent.work)
