"""Live SLOs and alerts over HTTP: ``GET /v1/slo`` (``warden.telemetry.slo_report``) and
``GET /v1/alerts``.

For admin and auditor keys. A tenant's key sees its own tenant's figures only; an
all-tenant key sees every tenant's, or the one it names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from warden.auth import ALL_TENANTS, Role
from warden.server._deps import Caller, State, require, tenant_for
from warden.server._problems import problem_responses
from warden.server._schemas import ID_PATTERN
from warden.telemetry import list_alerts, slo_report

router = APIRouter(tags=["slo"])
ERRORS = problem_responses(400, 401, 403, 422, 429, 503)

_USD = r"^-?[0-9]+(\.[0-9]+)?$"


class _Out(BaseModel):
    # ``SloReport.to_json`` is validated into these: a field added there and not here
    # fails loudly instead of vanishing from the API.
    model_config = ConfigDict(extra="forbid")


class SloFiguresOut(_Out):
    runs_started: int
    runs_finished: int
    successful: int
    success_rate: float | None = Field(description="successful / finished; null: none finished")
    actions: int
    executed: int
    p50_latency_ms: float | None = Field(description="upper bound of its ~19% bucket")
    p95_latency_ms: float | None
    escalations: int
    escalation_rate: float | None = Field(description="approval requests / actions")
    violations: int
    policy_violation_rate: float | None = Field(description="denied by a rule / actions")
    approvals_decided: dict[str, int]
    decision_p95_ms: float | None = Field(description="request to decision")
    tool_errors: dict[str, int] = Field(description="per tool")
    blocked_by_rule: dict[str, int]
    denied: dict[str, int] = Field(description="per kind (policy_block, scope_denied, ...)")
    cost_usd: str = Field(pattern=_USD)
    cost_per_task_usd: str | None = Field(
        pattern=_USD, description="spend of all runs / successful runs; null: none succeeded"
    )
    unpriced_calls: int


class BreachOut(_Out):
    window: Literal["1h", "7d", "30d"]
    target: str
    figure: str
    expected: float
    measured: float


class SloGroupOut(_Out):
    key: dict[str, str | None] = Field(description="workflow, tenant, task_type (null: none)")
    windows: dict[Literal["1h", "7d", "30d"], SloFiguresOut]
    drift: dict[str, float | None] = Field(description="percent change, 7d against 30d")
    targets: dict[str, float] | None = Field(description="the workflow's slo:, if any")
    breaches: list[BreachOut]


class SloReportOut(_Out):
    now: datetime
    windows: dict[Literal["1h", "7d", "30d"], datetime] = Field(
        description="the first hour each window counts"
    )
    tenant: str | None
    workflow: str | None
    groups: list[SloGroupOut]


class AlertOut(_Out):
    workflow: str
    alert: str
    kind: str
    tenant: str = Field(description="* for an alert of no one tenant")
    subject: str
    state: Literal["firing", "resolved"]
    fired_at: datetime
    resolved_at: datetime | None
    times_fired: int
    detail: dict[str, Any]


class AlertsOut(_Out):
    alerts: list[AlertOut] = Field(description="newest first")


@router.get(
    "/v1/slo",
    response_model=SloReportOut,
    responses=ERRORS,
    summary="Live SLOs per workflow, tenant and task type",
    description="Success rate, p50/p95 latency, escalation and policy-violation rates and "
    "cost per successful task over 1 h, 7 d and 30 d (runs that started in the hours "
    "overlapping each window), the change of each 7 d figure against 30 d (`drift`, "
    "percent), the workflow's `slo:` targets and the targets each window misses "
    "(`breaches`). Money is USD as exact decimal strings. docs/slo-alerts.md describes "
    "every figure.",
)
async def slo(
    state: State,
    caller: Caller,
    workflow: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
    tenant: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
) -> SloReportOut:
    require(caller, Role.AUDITOR)
    scope = tenant if caller.tenant == ALL_TENANTS else tenant_for(caller, tenant)
    targets = {name: gw.spec.spec.slo for name, gw in state.gateways.items()}
    report = await state.run_sync(
        slo_report, state.store, targets=targets, tenant=scope, workflow=workflow
    )
    return SloReportOut.model_validate(report.to_json())


@router.get(
    "/v1/alerts",
    response_model=AlertsOut,
    responses=ERRORS,
    summary="Alerts, firing and resolved",
    description="Every alert of the spec's `alerts:` that fired, newest first; a tenant's "
    "key sees its tenant's (alerts of no one tenant, such as the approval queue, have "
    "tenant `*` and are shown to all-tenant keys only).",
)
async def alerts(
    state: State,
    caller: Caller,
    status: Literal["firing", "resolved"] | None = Query(default=None, alias="state"),
    tenant: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
) -> AlertsOut:
    require(caller, Role.AUDITOR)
    scope = tenant if caller.tenant == ALL_TENANTS else tenant_for(caller, tenant)
    found = await state.run_sync(list_alerts, state.store, tenant=scope, state=status)
    return AlertsOut.model_validate({"alerts": found})
