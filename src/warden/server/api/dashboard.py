"""The console's dashboards as JSON: ``GET /v1/dashboard`` (``warden.telemetry.dashboard``).

For admin and auditor keys, as ``GET /v1/slo``: a tenant's key sees its own tenant's
figures only; an all-tenant key sees every tenant's, or the one it names. Read from the
hourly rollups, never from the ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from warden.auth import ALL_TENANTS, Principal, Role
from warden.errors import InvalidInputError
from warden.server._deps import Caller, State, require, tenant_for
from warden.server._problems import ApiProblem, problem_responses
from warden.server._schemas import ID_PATTERN
from warden.server._state import ServerState
from warden.telemetry._dashboard import Dashboard, dashboard, parse_window

router = APIRouter(tags=["slo"])
ERRORS = problem_responses(400, 401, 403, 422, 429, 503)

_USD = r"^-?[0-9]+(\.[0-9]+)?$"
_NUMBER = r"^-?[0-9]+(\.[0-9]+)?$"


class _Out(BaseModel):
    # ``Dashboard.to_json`` is validated into these: a field added there and not here
    # fails loudly instead of vanishing from the API.
    model_config = ConfigDict(extra="forbid")


class DashboardFiguresOut(_Out):
    runs_started: int
    runs_finished: int
    successful: int
    success_rate: float | None = Field(description="successful / finished runs")
    actions: int
    executed: int
    escalations: int = Field(description="approvals requested")
    escalation_rate: float | None = Field(description="approvals requested / actions")
    violations: int = Field(description="actions denied by a rule")
    blocked_by_rule: dict[str, int] = Field(description="denials per rule, most first")
    approvals_decided: dict[str, int] = Field(description="per decision")
    decision_p50_ms: float | None = Field(description="request to decision (bucket bound)")
    decision_p95_ms: float | None
    decision_mean_ms: float | None
    tool_errors: dict[str, int] = Field(description="per tool, most first")
    tool_error_rate: float | None = Field(description="tool errors / (executed + tool errors)")
    p50_latency_ms: float | None = Field(description="upper bound of its ~19% bucket")
    p95_latency_ms: float | None
    cost_usd: str = Field(pattern=_USD)
    cost_per_success_usd: str | None = Field(
        pattern=_USD, description="spend of all runs / successful runs; null: none succeeded"
    )
    unpriced_calls: int


class PointOut(_Out):
    start: datetime = Field(description="the first hour of the period counted")
    runs_started: int
    runs_finished: int
    successful: int
    success_rate: float | None
    escalations: int
    escalation_rate: float | None
    cost_usd: str = Field(pattern=_USD)
    p95_latency_ms: float | None


class DriftOut(_Out):
    figure: Literal["success_rate", "escalation_rate", "cost_per_task_usd"]
    value_7d: float | None
    value_30d: float | None
    change_pct: float | None = Field(description="percent change, 7d against 30d")


class TargetStatusOut(_Out):
    workflow: str
    target: str = Field(description="the slo: key")
    figure: str
    expected: float
    measured: float | None
    status: Literal["met", "missed", "no data"]


class RoiOut(_Out):
    workflow: str | None = Field(description="null: the sum over the workflows")
    tasks_resolved: int = Field(description="successful runs")
    escalations: int
    minutes_saved: str = Field(
        pattern=_NUMBER,
        description="resolved x human_minutes_per_task - escalations x escalation_minutes",
    )
    hours_saved: str = Field(pattern=_NUMBER)
    cost_avoided_usd: str = Field(
        pattern=_USD, description="hours saved x human_cost_per_hour_usd, to the cent"
    )
    agent_cost_usd: str = Field(pattern=_USD, description="spend of the runs in the window")
    net_value_usd: str = Field(pattern=_USD, description="cost avoided - agent cost")


class DashboardOut(_Out):
    now: datetime
    window: Literal["1h", "7d", "30d"]
    start: datetime = Field(description="the first hour the window counts")
    step_s: int = Field(description="the length of one point of `series`, seconds")
    tenant: str | None
    workflow: str | None
    empty: bool = Field(description="true: no run in this window")
    figures: DashboardFiguresOut
    spend_by_tenant: dict[str, str] = Field(description="USD, dearest first")
    spend_by_workflow: dict[str, str]
    spend_by_route: dict[str, str] = Field(
        description="per declared model, `(tools)` for tools' declared costs"
    )
    drift: list[DriftOut]
    slo: list[TargetStatusOut] = Field(description="each workflow's slo: targets, this window")
    series: list[PointOut] = Field(description="per hour (1h), 6 hours (7d) or day (30d)")
    roi: list[RoiOut] = Field(description="per workflow whose spec has an roi: block")
    roi_total: RoiOut | None
    roi_missing: list[str] = Field(description="workflows with runs and no roi: block")


async def read_dashboard(
    state: ServerState,
    caller: Principal,
    *,
    window: str,
    workflow: str | None,
    tenant: str | None,
) -> Dashboard:
    """The dashboards for ``caller``: the role and tenant checks of ``GET /v1/slo``; a bad
    window is a 422."""
    require(caller, Role.AUDITOR)
    scope = tenant if caller.tenant == ALL_TENANTS else tenant_for(caller, tenant)
    try:
        chosen = parse_window(window)
    except InvalidInputError as exc:
        raise ApiProblem(422, "validation", str(exc)) from None
    specs = {name: gw.spec.spec for name, gw in state.gateways.items()}
    return await state.run_sync(
        dashboard,
        state.store,
        window=chosen,
        tenant=scope,
        workflow=workflow,
        targets={name: spec.slo for name, spec in specs.items()},
        roi={name: spec.roi for name, spec in specs.items()},
    )


@router.get(
    "/v1/dashboard",
    response_model=DashboardOut,
    responses=ERRORS,
    summary="The console's dashboards: success, escalations, blocks, latency, spend, ROI",
    description="Over 1 h, 7 d or 30 d (the runs that started in the hours overlapping the "
    "window), for one workflow and tenant or all: success and escalation rates, blocks by "
    "rule, approvals and time to decision, tool error rate, latency p50/p95, spend by "
    "tenant, workflow and route, cost per successful run, 7 d vs 30 d drift, each "
    "workflow's SLO targets met or missed, a series for charts and the ROI of workflows "
    "whose spec has an `roi:` block. Read from the hourly rollups. docs/console.md "
    "(Dashboards) describes every figure.",
)
async def get_dashboard(
    state: State,
    caller: Caller,
    window: str = Query(default="7d", max_length=10, description="1h, 7d or 30d"),
    workflow: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
    tenant: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
) -> DashboardOut:
    found = await read_dashboard(state, caller, window=window, workflow=workflow, tenant=tenant)
    return DashboardOut.model_validate(found.to_json())
