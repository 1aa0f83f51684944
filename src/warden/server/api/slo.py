"""Live SLOs and alerts over HTTP: ``GET /v1/slo`` (``warden.telemetry.slo_report``) and
``GET /v1/alerts``.

For admin and auditor keys. A tenant's key sees its own tenant's figures only; an
all-tenant key sees every tenant's, or the one it names.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query

from warden.auth import ALL_TENANTS, Role
from warden.server._deps import Caller, State, require, tenant_for
from warden.server._problems import problem_responses
from warden.server._schemas import ID_PATTERN
from warden.telemetry import list_alerts, slo_report

router = APIRouter(tags=["slo"])
ERRORS = problem_responses(400, 401, 403, 422, 429, 503)


@router.get(
    "/v1/slo",
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
) -> dict[str, Any]:
    require(caller, Role.AUDITOR)
    scope = tenant if caller.tenant == ALL_TENANTS else tenant_for(caller, tenant)
    targets = {name: gw.spec.spec.slo for name, gw in state.gateways.items()}
    report = await state.run_sync(
        slo_report, state.store, targets=targets, tenant=scope, workflow=workflow
    )
    return report.to_json()


@router.get(
    "/v1/alerts",
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
) -> dict[str, Any]:
    require(caller, Role.AUDITOR)
    scope = tenant if caller.tenant == ALL_TENANTS else tenant_for(caller, tenant)
    found = await state.run_sync(list_alerts, state.store, tenant=scope, state=status)
    return {"alerts": found}
