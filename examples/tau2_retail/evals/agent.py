"""The agent under test for the τ²-retail suite: a scripted agent that plays a case's
calls in one run (one run is one conversation), as the harness does.

A case's input is ``{"customer": USER_ID, "steps": [{"tool", "args", "confirm"}]}``. A
write comes back ``Pending`` (``writes_need_user_confirmation``: the customer says yes
first); for a step with ``confirm`` the agent approves it as the customer and executes
it, as ``harness.Harness.propose`` does. A violation's last step is not confirmed: it must
be refused by the rule it breaks, not by the customer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from warden import Allowed, Denied, Failed, Pending, Run  # noqa: E402
from warden.evals import Case  # noqa: E402


def _status(result: Any) -> str:
    match result:
        case Allowed():
            return "executed"
        case Denied():
            return "denied"
        case Pending():
            return "pending"
        case Failed(kind=kind):
            return f"failed:{kind}"
    return "unknown"


async def work(case: Case, run: Run) -> dict[str, Any]:
    """Play the steps; the output lists each step's status."""
    data = case.input or {}
    customer = str(data.get("customer") or "unknown")
    # The run's gateway decides the customer's confirmation, as a chat front end would.
    gateway = run._gateway
    statuses: list[str] = []
    for step in data.get("steps", []):
        result = await run.call(step["tool"], dict(step.get("args") or {}))
        if isinstance(result, Pending) and step.get("confirm", True):
            await gateway.approve(
                result.approval_id,
                approver=f"customer:{customer}",
                roles=["customer"],
                rationale="The customer confirmed the listed action details (yes).",
            )
            result = await gateway.execute_approved(result.approval_id)
        statuses.append(_status(result))
    return {"statuses": statuses}
