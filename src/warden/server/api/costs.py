"""Cost reports over HTTP: ``GET /v1/costs`` (``warden.economics.cost_report``).

For admin and auditor keys. A tenant's key sees its own tenant's runs only; an all-tenant
key sees every tenant's, or the one it names.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from warden.auth import ALL_TENANTS, Role
from warden.economics import DIMENSIONS, cost_report, parse_by, parse_since
from warden.errors import InvalidInputError
from warden.server._deps import Caller, State, require, tenant_for
from warden.server._problems import ApiProblem, problem_responses
from warden.server._schemas import ID_PATTERN

router = APIRouter(prefix="/v1/costs", tags=["costs"])
ERRORS = problem_responses(400, 401, 403, 422, 429, 503)

_USD = r"^-?[0-9]+(\.[0-9]+)?$"
Usd = Field(pattern=_USD, description="USD as an exact decimal string")


class _Out(BaseModel):
    # ``CostReport.to_json`` is validated into these: a field added there and not here
    # fails loudly instead of vanishing from the API.
    model_config = ConfigDict(extra="forbid")


class FiguresOut(_Out):
    runs: int
    open_runs: int = Field(description="runs not finished yet (never successful; spend counted)")
    successful: int
    cost_usd: str = Usd
    cost_per_run_p50: str = Usd
    cost_per_run_p95: str = Usd
    cost_per_success: str | None = Field(
        pattern=_USD,
        description="the spend of all runs of the group divided by its successful runs; "
        "null when none succeeded",
    )
    tokens: int
    input_tokens: int
    output_tokens: int
    calls: int
    calls_without_usage: int = Field(description="charged their reservation: usage unreported")
    unpriced_calls: int = Field(description="calls with no known cost (not in cost_usd)")
    cache_hits: int
    saved_usd: str = Usd


class ChangeOut(_Out):
    """Percent change against the previous window; null when there is nothing to compare."""

    cost_per_run_p50: float | None
    cost_per_run_p95: float | None
    cost_per_success: float | None


class CostGroupOut(_Out):
    key: dict[str, str | None] = Field(description="dimension -> value (null: none)")
    current: FiguresOut
    previous: FiguresOut | None = Field(description="null: no run of the group then")
    change: ChangeOut
    flagged: list[str] = Field(description="figures of `change` up more than 20%")


class CostReportOut(_Out):
    since: str
    start: datetime
    end: datetime
    previous_start: datetime
    by: list[str]
    tenant: str | None
    groups: list[CostGroupOut] = Field(description="groups with runs in the window, dearest first")
    total: CostGroupOut = Field(description="every run of the window once")


@router.get(
    "",
    response_model=CostReportOut,
    responses=ERRORS,
    summary="Cost per run and per successful run",
    description="Per group of `by` (comma-separated: "
    + ", ".join(DIMENSIONS)
    + "), for the runs started in the last `since` (e.g. 7d, 24h), against the window of "
    "the same length before. A run succeeded when its task type's success check held when "
    "it finished, or, without a check, when it finished `completed`. Cost per successful run "
    "is the spend of all runs of the group, failed ones included, per successful run.",
)
async def costs(
    state: State,
    caller: Caller,
    since: str = Query(default="7d", max_length=20, description="window length: 7d, 24h, 90m"),
    by: str = Query(default="workflow", max_length=100, description="comma-separated"),
    tenant: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
) -> CostReportOut:
    require(caller, Role.AUDITOR)
    scope = tenant if caller.tenant == ALL_TENANTS else tenant_for(caller, tenant)
    try:
        window, dims = parse_since(since), parse_by(by)
    except InvalidInputError as exc:
        raise ApiProblem(422, "validation", str(exc)) from None
    report = await state.run_sync(cost_report, state.store, since=window, by=dims, tenant=scope)
    return CostReportOut.model_validate(report.to_json())
