"""The agent's principal must hold the tool's scope; the task type must allow the tool."""

from __future__ import annotations

from warden.pipeline._call import Call
from warden.pipeline.stages._base import Next
from warden.results import Denied, FailureKind, Result


class IdentityStage:
    async def __call__(self, call: Call, next: Next) -> Result:
        tool, run = call.tool, call.run
        assert tool is not None
        if tool.scope is not None and tool.scope not in run.scopes:
            return Denied(
                FailureKind.SCOPE_DENIED,
                (f"agent {run.agent!r} lacks scope {tool.scope!r} needed by {tool.name!r}",),
                call.action_id,
            )
        if (
            run.allowed_tools is not None
            and tool.kind == "tool"
            and tool.name not in run.allowed_tools
        ):
            return Denied(
                FailureKind.POLICY_BLOCK,
                (f"task type {run.task_type!r} does not allow tool {tool.name!r}",),
                call.action_id,
                ("task_type",),
            )
        return await next(call)
