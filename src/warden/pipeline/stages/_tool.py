"""A tool the workflow does not have is a hallucination: denied, never an exception."""

from __future__ import annotations

from collections.abc import Callable

from warden.pipeline._call import Call
from warden.pipeline._services import Services
from warden.pipeline.stages._base import Next
from warden.results import Denied, FailureKind, Result
from warden.spec import MODEL_TOOL_PREFIX


class ToolStage:
    """Looks the tool up and hands the call to the chain of that tool's stages
    (``Pipeline.tool_stages``): the rest of the pipeline, without the stages that cannot
    apply to it. ``next`` is unused: every call continues in its tool's chain."""

    def __init__(self, svc: Services, tool_chain: Callable[[str], Next]) -> None:
        self.svc = svc
        self.tool_chain = tool_chain

    async def __call__(self, call: Call, next: Next) -> Result:
        models = self.svc.models
        if models is not None and call.tool_name.startswith(MODEL_TOOL_PREFIX):
            route = call.tool_name.removeprefix(MODEL_TOOL_PREFIX)
            if route in models.routes:
                picked = models.route(route, call)
                if picked is None:
                    assert call.routed is not None
                    return Denied(FailureKind.POLICY_BLOCK, (call.routed,), call.action_id)
                call.tool_name = MODEL_TOOL_PREFIX + picked
        tool = self.svc.registry.get(call.tool_name)
        if tool is None:
            return Denied(
                FailureKind.UNKNOWN_TOOL,
                (
                    f"no tool {call.tool_name!r} in workflow {self.svc.workflow!r}; "
                    f"available: {', '.join(self.svc.registry.names())}",
                ),
                call.action_id,
            )
        call.tool = tool
        return await self.tool_chain(tool.name)(call)
