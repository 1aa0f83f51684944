"""Run caps: max steps; the same call N times in a row stops the run as a runaway."""

from __future__ import annotations

import copy
from typing import Any

from warden.pipeline._call import Call
from warden.pipeline._services import Services
from warden.pipeline.stages._base import Next
from warden.results import Denied, FailureKind, Result


class CapsStage:
    def __init__(self, svc: Services) -> None:
        self.limits = svc.loaded.spec.limits

    async def __call__(self, call: Call, next: Next) -> Result:
        run = call.run
        if run.stopped:
            return Denied(FailureKind.RUNAWAY, (run.stopped,), call.action_id)
        if call.approval is not None:  # a resumed call took its step when it was proposed
            return await next(call)
        if run.steps > self.limits.max_steps:
            run.stopped = f"the run reached max_steps ({self.limits.max_steps}) and was stopped"
            return Denied(FailureKind.MAX_STEPS, (run.stopped,), call.action_id)
        if call.tool_name == run.last_tool and call.raw_args == run.last_args:
            run.repeats += 1
        else:
            run.last_tool, run.last_args, run.repeats = call.tool_name, _copy(call.raw_args), 1
        if run.repeats >= self.limits.max_identical_calls:
            run.stopped = (
                f"{call.tool_name!r} was called {run.repeats} times in a row with the same "
                "arguments: runaway loop, run stopped"
            )
            return Denied(FailureKind.RUNAWAY, (run.stopped,), call.action_id)
        return await next(call)


_SCALARS = (str, int, float, bool, type(None))


def _copy(args: Any) -> Any:
    """A copy the caller cannot change: an agent that appends to the message list (or
    any list or dict) it passed and sends it again makes a new call, not a repeat; a
    shallow copy would share the list and see the two calls as identical. Arguments are
    JSON-shaped, so dicts and lists are copied here and only other values go to
    ``copy.deepcopy`` (which took 1.1 µs for ``{"x": 1}`` against 0.6 µs, and 6.2 against
    1.6 µs for a small nested order, on every call)."""
    kind = type(args)
    if kind is dict:
        return {k: v if type(v) in _SCALARS else _copy(v) for k, v in args.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else _copy(v) for v in args]
    if kind in _SCALARS:
        return args
    return copy.deepcopy(args)
