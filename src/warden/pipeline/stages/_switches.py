"""Kill switches, checked when the call (or a resumed approval) runs."""

from __future__ import annotations

from warden.pipeline._call import Call
from warden.pipeline._services import Services
from warden.pipeline.stages._base import Next
from warden.results import Denied, FailureKind, Result


class SwitchStage:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call, next: Next) -> Result:
        switch = self.svc.switches.blocking(call.run.tenant, self.svc.workflow, call.tool_name)
        if switch is not None:
            return Denied(FailureKind.KILLED, (switch.describe(),), call.action_id)
        return await next(call)
