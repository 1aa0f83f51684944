"""``serialize_on``: one call at a time per resource, from its facts through its effect."""

from __future__ import annotations

from warden.errors import CelError
from warden.pipeline._call import Call
from warden.pipeline._services import Services
from warden.pipeline.stages._base import Next
from warden.policy.cel import CompiledExpression
from warden.results import Failed, FailureKind, Result


class SerializeStage:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        # Compiled (and its mistakes reported, located) with the policy.
        self.on: dict[str, CompiledExpression] = svc.policy.serialize_on

    async def __call__(self, call: Call, next: Next) -> Result:
        expr = self.on.get(call.tool_name)
        if expr is None:
            return await next(call)
        try:
            resource = expr.evaluate({"args": call.args, "tenant": call.run.tenant})
        except CelError as exc:
            return Failed(
                FailureKind.SCHEMA_ERROR,
                f"serialize_on of {call.tool_name!r} could not be evaluated: {exc}",
                call.action_id,
            )
        key = f"{call.run.tenant}\x00{self.svc.workflow}\x00{resource}"
        async with self.svc.locks.hold(key):
            return await next(call)
