"""The dashboards page (``/ui/dashboards``): ``GET /v1/dashboard``'s figures, with the same
role and tenant checks (``read_dashboard``), as panels, inline SVG charts with their tables,
SLO status and the ROI panel. Works without script: the filters are a plain GET form."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from warden.auth import ALL_TENANTS
from warden.server._schemas import ID_PATTERN
from warden.server.api.dashboard import read_dashboard
from warden.server.ui._charts import Chart, bar_list, columns
from warden.server.ui._core import ConsoleDep, ConsoleRoute
from warden.telemetry._dashboard import Dashboard, Point, rollup_tenants
from warden.telemetry._slo import WINDOWS

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)

_ID = re.compile(ID_PATTERN)
_CENT = Decimal("0.01")


def usd(value: Decimal | None) -> str:
    """Dollars for people: to the cent, or to four places below a cent (a model call's
    spend is often a fraction of a cent); the JSON has the exact figure."""
    if value is None:
        return "—"
    places = _CENT if value == 0 or abs(value) >= _CENT else Decimal("0.0001")
    return "$" + format(value.quantize(places, rounding=ROUND_HALF_EVEN), ",f")


def number(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: ``300``, ``22.5``."""
    return format(value.normalize(), "f")


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def _when(point: Point, window: str) -> str:
    if window == "1h":
        return point.start.strftime("%H:00")
    if window == "7d":
        return point.start.strftime("%m-%d %H:00")
    return point.start.strftime("%m-%d")


def charts(found: Dashboard) -> list[Chart]:
    """The page's charts, in the order shown."""
    w = found.window
    per = {"1h": "hour", "7d": "6 hours", "30d": "day"}[w]
    series = found.series
    made = [
        columns(
            "chart-success",
            f"Success rate per {per}",
            [(_when(p, w), p.success_rate, pct(p.success_rate)) for p in series],
            header=("Period (UTC)", "Success rate"),
            scale_text="{:.0%}",
            top=1.0,
        ),
        columns(
            "chart-runs",
            f"Runs started per {per}",
            [(_when(p, w), float(p.runs_started), str(p.runs_started)) for p in series],
            header=("Period (UTC)", "Runs started"),
        ),
        columns(
            "chart-escalations",
            f"Escalation rate per {per}",
            [(_when(p, w), p.escalation_rate, pct(p.escalation_rate)) for p in series],
            header=("Period (UTC)", "Escalation rate"),
            scale_text="{:.0%}",
        ),
        columns(
            "chart-latency",
            f"p95 latency per {per}",
            [(_when(p, w), p.p95_latency_ms, ms(p.p95_latency_ms)) for p in series],
            header=("Period (UTC)", "p95 latency"),
            scale_text="{:g} ms",
        ),
        columns(
            "chart-spend",
            f"Spend per {per}",
            [
                (_when(p, w), float(p.cost_usd) if p.runs_started else None, usd(p.cost_usd))
                for p in series
            ],
            header=("Period (UTC)", "Spend (USD)"),
            scale_text="${:g}",
        ),
    ]
    ranked = [
        ("chart-blocks", "Blocks by rule", found.figures.blocked_by_rule, ("Rule", "Blocks")),
        ("chart-tool-errors", "Tool errors by tool", found.figures.tool_errors, ("Tool", "Errors")),
    ]
    for chart_id, title, counts, header in ranked:
        if counts:
            items = [(k, float(v), str(v)) for k, v in counts.items()]
            made.append(bar_list(chart_id, title, items, header=header))
    spend = [
        ("chart-spend-tenant", "Spend by tenant", found.spend_by_tenant, "Tenant"),
        ("chart-spend-workflow", "Spend by workflow", found.spend_by_workflow, "Workflow"),
        ("chart-spend-route", "Spend by route", found.spend_by_route, "Route (model)"),
    ]
    for chart_id, title, amounts, name in spend:
        if amounts:
            items = [(k, float(v), usd(v)) for k, v in amounts.items()]
            made.append(bar_list(chart_id, title, items, header=(name, "Spend (USD)")))
    return made


def _field_errors(window: str, workflow: str, tenant: str) -> dict[str, str]:
    errors = {}
    if window not in WINDOWS:
        errors["window"] = "choose one of 1h, 7d, 30d"
    for name, value in (("workflow", workflow), ("tenant", tenant)):
        if value and (len(value) > 120 or not _ID.fullmatch(value)):
            errors[name] = "letters, digits and . _ : @ - only, at most 120"
    return errors


@router.get("/dashboards", response_class=HTMLResponse)
async def dashboards_page(
    ui: ConsoleDep,
    window: str = Query(default="7d", max_length=200),
    workflow: str = Query(default="", max_length=200),
    tenant: str = Query(default="", max_length=200),
) -> HTMLResponse:
    values = {"window": window, "workflow": workflow, "tenant": tenant}
    all_tenants = ui.principal.tenant == ALL_TENANTS
    errors = _field_errors(window, workflow, tenant)
    tenants: list[str] = []
    if all_tenants:
        tenants = await ui.state.run_sync(rollup_tenants, ui.state.store)
    context: dict[str, Any] = {
        "values": values,
        "errors": errors,
        "workflows": ui.state.workflow_names,
        "tenants": tenants,
        "all_tenants": all_tenants,
        "usd": usd,
        "pct": pct,
        "number": number,
        "ms": ms,
    }
    if errors:
        return ui.page("dashboards.html", 422, found=None, charts=[], **context)
    found = await read_dashboard(
        ui.state,
        ui.principal,
        window=window,
        workflow=workflow or None,
        tenant=tenant or None,  # another tenant's, for a tenant's key: 403, as the API
    )
    return ui.page("dashboards.html", found=found, charts=charts(found), **context)


__all__ = ["charts", "router"]
