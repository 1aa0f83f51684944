"""Draft tier: writes are recorded as what would have been sent, and not executed."""

from __future__ import annotations

from warden.pipeline._call import Call
from warden.pipeline.stages._base import Next
from warden.results import Drafted, Result
from warden.spec import Tier


class DraftStage:
    async def __call__(self, call: Call, next: Next) -> Result:
        tool = call.tool
        assert tool is not None
        if call.run.tier is Tier.DRAFT and tool.effect.is_write:
            return Drafted(call.action_id, tool.name, call.args)
        return await next(call)
