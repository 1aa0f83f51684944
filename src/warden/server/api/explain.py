"""Explaining a recorded decision: ``GET /v1/runs/{run_id}/actions/{step}/explain``.

The decision is recomputed with the workflow's rules as this server loaded them, from the
step's ledger events (see ``warden.policy._explain``); visible to the keys that can see
the run.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict

from warden.errors import NotFoundError
from warden.ledger import iter_events
from warden.pipeline.stages._base import plain
from warden.policy._explain import RecordedStep, explain_step
from warden.server._deps import Caller, State
from warden.server._problems import problem_responses
from warden.server._schemas import RunId
from warden.server.api.runs import _visible_run
from warden.tools import SchemaViolation

router = APIRouter(prefix="/v1/runs", tags=["runs"])
ERRORS = problem_responses(400, 401, 403, 404, 409, 422, 429, 503)


class _Out(BaseModel):
    # ``StepExplanation.to_json`` is validated into these: a field added there and not
    # here fails loudly instead of vanishing from the API.
    model_config = ConfigDict(extra="forbid")


class PathValueOut(_Out):
    path: str
    missing: bool
    #: null when ``missing``
    value: Any = None


class RuleOut(_Out):
    name: str
    effect: str
    when: str
    matched: Literal["true", "false", "error"]
    error: str | None = None
    values: list[PathValueOut]


class DecisionOut(_Out):
    effect: str
    rules: list[str]
    matched: list[str]
    reasons: list[str]
    risk: float
    approvers: str | None = None
    sla_class: str | None = None
    policy: str | None = None


class RecordedOut(_Out):
    effect: str
    rules: list[str]
    matched: list[str]
    reasons: list[str]
    policy: str | None = None


class ExplainOut(_Out):
    run_id: str
    step: int
    action_id: str
    workflow: str
    tool: str
    effect_class: str
    tier: str
    #: every rule considered for the tool, in spec order
    rules: list[RuleOut]
    #: the decision the rules reach now
    decision: DecisionOut
    #: the decision recorded on the ledger
    recorded: RecordedOut
    same_decision: bool
    differences: list[str]
    #: the policy fingerprint differs: the rules changed since the decision was recorded
    spec_changed: bool
    verdict: str


@router.get(
    "/{run_id}/actions/{step}/explain",
    response_model=ExplainOut,
    responses=ERRORS,
    summary="Explain a recorded decision",
    description="Every rule considered for the step's tool, whether it matched (true, false, "
    "error) and the values of the context paths it reads, rebuilt from the step's ledger "
    "events; and whether the workflow's rules as loaded now reach the recorded decision.",
)
async def explain_action(
    run_id: RunId,
    state: State,
    caller: Caller,
    step: int = PathParam(ge=1, le=1_000_000),
) -> ExplainOut:
    def work() -> dict[str, Any]:
        row = _visible_run(state, caller, run_id)
        gateway = state.gateway(row["workflow"])
        gateway.flush()
        recorded = RecordedStep.from_events(run_id, step, iter_events(state.store, run_id=run_id))
        svc = gateway.svc
        tool = svc.registry.get(recorded.tool)
        if tool is None:
            raise NotFoundError(
                f"tool {recorded.tool!r} of step {step} is no longer in workflow {row['workflow']!r}"
            )
        args = None
        if tool.input is not None and isinstance(recorded.args, dict):
            try:
                args = plain(tool.input.validate(recorded.args))
            except SchemaViolation:
                args = None  # explained with the arguments as recorded
        result = explain_step(svc.policy, recorded, svc.tool_contexts[tool.name], tool.effect, args)
        return result.to_json()

    return ExplainOut.model_validate(await state.run_sync(work))
