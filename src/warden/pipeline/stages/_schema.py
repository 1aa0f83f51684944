"""Strict validation of the arguments (for a resumed approval: of the approved ones)."""

from __future__ import annotations

from warden.pipeline._call import Call
from warden.pipeline.stages._base import Next, plain
from warden.results import Failed, FailureKind, Result
from warden.tools import SchemaViolation


class SchemaStage:
    async def __call__(self, call: Call, next: Next) -> Result:
        tool = call.tool
        assert tool is not None
        raw = call.raw_args if call.raw_args is not None else {}
        if not isinstance(raw, dict):
            return Failed(
                FailureKind.SCHEMA_ERROR,
                f"arguments must be an object, got {type(raw).__name__}",
                call.action_id,
            )
        if tool.input is None:
            call.kwargs = raw
        else:
            try:
                call.kwargs = tool.input.validate(raw)
            except SchemaViolation as exc:
                return Failed(FailureKind.SCHEMA_ERROR, str(exc), call.action_id, tuple(exc.errors))
        call.args = plain(call.kwargs)
        return await next(call)
