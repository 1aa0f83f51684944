"""The spec's ``alerts:``: built-in alert kinds, each firing once and resolving
(evaluated by ``warden.telemetry``; docs/slo-alerts.md describes each kind)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, model_validator

from warden.spec._base import Duration, Identifier, _Model


class _Alert(_Model):
    kind: str
    #: unique in the spec; defaults to the kind
    name: Identifier | None = None

    @property
    def key(self) -> str:
        return self.name or self.kind


class UnauthorizedAlert(_Alert):
    """Calls denied because the agent lacks the tool's scope (``scope_denied``), and (in
    the server) requests refused for reaching another tenant's or agent's objects:
    ``count`` of them for one tenant within ``within`` fires; it resolves once ``within``
    passes with fewer."""

    kind: Literal["unauthorized_attempt"]
    count: int = Field(1, ge=1)
    within: Duration = timedelta(minutes=10)


class ToolFailuresAlert(_Alert):
    """``count`` failures of one tool (errors, timeouts, retries exhausted, open circuit)
    within ``within``."""

    kind: Literal["tool_failures"]
    count: int = Field(5, ge=1)
    within: Duration = timedelta(minutes=10)
    #: only these tools (empty: every tool)
    tools: list[str] = Field(default_factory=list)


class RunawayAlert(_Alert):
    """A run past ``max_steps`` steps or ``max_cost_usd`` spent; resolves when it ends."""

    kind: Literal["runaway_run"]
    max_steps: int | None = Field(None, ge=1)
    max_cost_usd: Decimal | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_limit(self) -> RunawayAlert:
        if self.max_steps is None and self.max_cost_usd is None:
            raise ValueError("a runaway_run alert needs max_steps, max_cost_usd or both")
        return self


class ApprovalQueueAlert(_Alert):
    """More than ``max_depth`` approvals pending, or the oldest older than ``max_age``."""

    kind: Literal["approval_queue"]
    max_depth: int | None = Field(None, ge=0)
    max_age: Duration | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> ApprovalQueueAlert:
        if self.max_depth is None and self.max_age is None:
            raise ValueError("an approval_queue alert needs max_depth, max_age or both")
        return self


class SloBreachAlert(_Alert):
    """A target of ``slo:`` missed over ``window`` by a group (tenant and task type) with
    at least ``min_runs`` finished runs in it."""

    kind: Literal["slo_breach"]
    window: Literal["1h", "7d", "30d"] = "1h"
    min_runs: int = Field(1, ge=1)


class CostGrowthAlert(_Alert):
    """Cost per successful task of the last 7 days more than ``max_increase_pct`` % above
    the 7 days before."""

    kind: Literal["cost_growth"]
    max_increase_pct: Decimal = Field(Decimal(20), gt=0)


class BudgetThresholdAlert(_Alert):
    """A budget's alert threshold crossed (``budgets[].alerts``): fires once per budget,
    threshold and period; resolves when the period ends."""

    kind: Literal["budget_threshold"]


AlertSpec = Annotated[
    UnauthorizedAlert
    | ToolFailuresAlert
    | RunawayAlert
    | ApprovalQueueAlert
    | SloBreachAlert
    | CostGrowthAlert
    | BudgetThresholdAlert,
    Field(discriminator="kind"),
]

ALERT_KINDS = (
    "unauthorized_attempt",
    "tool_failures",
    "runaway_run",
    "approval_queue",
    "slo_breach",
    "cost_growth",
    "budget_threshold",
)

__all__ = [
    "ALERT_KINDS",
    "AlertSpec",
    "ApprovalQueueAlert",
    "BudgetThresholdAlert",
    "CostGrowthAlert",
    "RunawayAlert",
    "SloBreachAlert",
    "ToolFailuresAlert",
    "UnauthorizedAlert",
]
