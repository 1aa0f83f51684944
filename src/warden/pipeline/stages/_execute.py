"""Run the tool: switches again at the moment of execution, credential, breaker, retries."""

from __future__ import annotations

from warden.pipeline._call import Call
from warden.pipeline._services import Services
from warden.pipeline.stages._base import Next
from warden.results import Failed, Result


class ExecuteStage:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def __call__(self, call: Call, next: Next) -> Result:
        tool, run, svc = call.tool, call.run, self.svc
        assert tool is not None
        used = run.retries.get(tool.name, 0)
        budget = max(0, svc.loaded.spec.limits.max_retries_per_tool - used)
        outcome = await svc.executor.run(run.tenant, tool, call.kwargs, retry_budget=budget)
        if outcome.attempts > 1:
            run.retries[tool.name] = used + outcome.attempts - 1
        call.attempts = outcome.attempts
        call.effect_possible = outcome.effect_possible
        call.redactor = outcome.redactor
        if not outcome.ok:
            assert outcome.kind is not None
            return Failed(outcome.kind, outcome.detail, call.action_id)
        call.output = outcome.value
        return await next(call)
