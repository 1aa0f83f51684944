"""The console's dashboards: every figure of one window (1 h, 7 d or 30 d) per workflow and
tenant, a series per period for the charts, SLO status, 7 d vs 30 d drift and the ROI
panel, read from the hourly rollups (``_rollups``) only, never from the ledger.

Two statements over ``slo_rollups``: the sums of the three windows per group (``_slo``'s
``read_sums``: totals, spend by tenant, workflow and route, drift, SLO status, ROI), and the
selected window's counters per period (the charts). Their cost depends on groups x hours,
not on the number of events. docs/console.md ("Dashboards") says what each figure means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import func, select

from warden.economics._reports import usd_text
from warden.errors import InvalidInputError
from warden.spec._models import ROI, SLO
from warden.store import Store
from warden.store._tables import slo_rollups
from warden.telemetry._slo import (
    TARGETS,
    WINDOWS,
    SloFigures,
    _drift,
    _quantile,
    _ratio,
    _Sums,
    hour_datetime,
    read_sums,
    window_start,
)

#: the length of one point of each window's series (rollups are hourly: 1 h is per hour)
STEPS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "7d": timedelta(hours=6),
    "30d": timedelta(days=1),
}
#: the figures compared 7 d against 30 d
DRIFTED = ("success_rate", "escalation_rate", "cost_per_task_usd")
#: spend the rollups hold no route for (rollups written before routes were counted)
UNATTRIBUTED = "(not attributed)"
_NANO = Decimal(10) ** 9
_CENT = Decimal("0.01")
_SERIES_METRICS = (
    "runs_started",
    "runs_finished",
    "runs_succeeded",
    "actions",
    "escalations",
    "spend_nusd",
    "latency",
)


def parse_window(text: str | None) -> str:
    """``1h``, ``7d`` or ``30d``; ``InvalidInputError`` otherwise."""
    if text in WINDOWS:
        assert text is not None
        return text
    raise InvalidInputError(f"window: {text!r} is not a window; give one of 1h, 7d, 30d")


def _merged(parts: Iterable[_Sums]) -> _Sums:
    total = _Sums()
    for part in parts:
        for metric, value in part.counts.items():
            total.add(metric, "", value)
        for metric, labelled in part.labelled.items():
            for label, value in labelled.items():
                total.add(metric, label, value)
    return total


def _usd(nano: int) -> Decimal:
    return Decimal(nano) / _NANO


@dataclass(frozen=True, slots=True)
class Figures:
    """The figures of one window, summed over the groups the filters keep."""

    runs_started: int
    runs_finished: int
    successful: int
    #: successful / finished runs
    success_rate: float | None
    actions: int
    executed: int
    escalations: int
    #: approval requests / actions (as ``warden slo``)
    escalation_rate: float | None
    violations: int
    blocked_by_rule: dict[str, int]
    approvals_decided: dict[str, int]
    #: request to decision: median and p95 from the rollups' buckets (upper bounds), mean
    #: from the summed milliseconds
    decision_p50_ms: float | None
    decision_p95_ms: float | None
    decision_mean_ms: float | None
    tool_errors: dict[str, int]
    #: tool errors / (executed calls + tool errors): of the calls that reached a tool
    tool_error_rate: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    cost_usd: Decimal
    #: spend of all runs / successful runs
    cost_per_success_usd: Decimal | None
    unpriced_calls: int

    @classmethod
    def of(cls, sums: _Sums) -> Figures:
        base = SloFigures.of(sums)
        decided = sum(base.approvals_decided.values())
        waits = sums.labelled.get("decision_wait", {})
        tool_errors = sum(base.tool_errors.values())
        return cls(
            runs_started=base.runs_started,
            runs_finished=base.runs_finished,
            successful=base.successful,
            success_rate=base.success_rate,
            actions=base.actions,
            executed=base.executed,
            escalations=base.escalations,
            escalation_rate=base.escalation_rate,
            violations=base.violations,
            blocked_by_rule=dict(sorted(base.blocked_by_rule.items(), key=lambda kv: -kv[1])),
            approvals_decided=base.approvals_decided,
            decision_p50_ms=_quantile(waits, 50),
            decision_p95_ms=base.decision_p95_ms,
            decision_mean_ms=round(sums.get("decision_ms") / decided, 3) if decided else None,
            tool_errors=dict(sorted(base.tool_errors.items(), key=lambda kv: -kv[1])),
            tool_error_rate=_ratio(tool_errors, base.executed + tool_errors),
            p50_latency_ms=base.p50_latency_ms,
            p95_latency_ms=base.p95_latency_ms,
            cost_usd=base.cost_usd,
            cost_per_success_usd=base.cost_per_task_usd,
            unpriced_calls=base.unpriced_calls,
        )

    @property
    def empty(self) -> bool:
        return not (self.runs_started or self.runs_finished or self.actions)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs_started": self.runs_started,
            "runs_finished": self.runs_finished,
            "successful": self.successful,
            "success_rate": self.success_rate,
            "actions": self.actions,
            "executed": self.executed,
            "escalations": self.escalations,
            "escalation_rate": self.escalation_rate,
            "violations": self.violations,
            "blocked_by_rule": self.blocked_by_rule,
            "approvals_decided": self.approvals_decided,
            "decision_p50_ms": self.decision_p50_ms,
            "decision_p95_ms": self.decision_p95_ms,
            "decision_mean_ms": self.decision_mean_ms,
            "tool_errors": self.tool_errors,
            "tool_error_rate": self.tool_error_rate,
            "p50_latency_ms": self.p50_latency_ms,
            "p95_latency_ms": self.p95_latency_ms,
            "cost_usd": usd_text(self.cost_usd),
            "cost_per_success_usd": None
            if self.cost_per_success_usd is None
            else usd_text(self.cost_per_success_usd),
            "unpriced_calls": self.unpriced_calls,
        }


@dataclass(frozen=True, slots=True)
class Point:
    """One period of the series: the runs that started in it."""

    start: datetime
    runs_started: int
    runs_finished: int
    successful: int
    success_rate: float | None
    escalations: int
    escalation_rate: float | None
    cost_usd: Decimal
    p95_latency_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "runs_started": self.runs_started,
            "runs_finished": self.runs_finished,
            "successful": self.successful,
            "success_rate": self.success_rate,
            "escalations": self.escalations,
            "escalation_rate": self.escalation_rate,
            "cost_usd": usd_text(self.cost_usd),
            "p95_latency_ms": self.p95_latency_ms,
        }


@dataclass(frozen=True, slots=True)
class TargetStatus:
    workflow: str
    target: str
    figure: str
    expected: float
    measured: float | None
    #: ``met``, ``missed`` or ``no data``
    status: str

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "target": self.target,
            "figure": self.figure,
            "expected": self.expected,
            "measured": self.measured,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class Drift:
    figure: str
    value_7d: float | None
    value_30d: float | None
    #: percent change of the 7 d figure against the 30 d one (None: nothing to compare)
    change_pct: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value_7d": self.value_7d,
            "value_30d": self.value_30d,
            "change_pct": self.change_pct,
        }


@dataclass(frozen=True, slots=True)
class RoiFigures:
    """The ROI of one workflow (or of all, ``workflow`` None) over the window, from the
    spec's ``roi:`` baseline."""

    workflow: str | None
    tasks_resolved: int
    escalations: int
    #: resolved x human minutes per task - escalations x escalation minutes
    minutes_saved: Decimal
    #: minutes saved / 60 x the hourly cost, to the cent
    cost_avoided_usd: Decimal
    #: the spend of the workflow's runs in the window
    agent_cost_usd: Decimal
    net_value_usd: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "tasks_resolved": self.tasks_resolved,
            "escalations": self.escalations,
            "minutes_saved": format(self.minutes_saved.normalize(), "f"),
            "hours_saved": format(
                (self.minutes_saved / 60).quantize(_CENT, rounding=ROUND_HALF_EVEN), "f"
            ),
            "cost_avoided_usd": usd_text(self.cost_avoided_usd),
            "agent_cost_usd": usd_text(self.agent_cost_usd),
            "net_value_usd": usd_text(self.net_value_usd),
        }


def roi_of(workflow: str | None, roi: ROI, figures: Figures) -> RoiFigures:
    minutes = (
        figures.successful * roi.human_minutes_per_task
        - figures.escalations * roi.escalation_minutes
    )
    avoided = (minutes * roi.human_cost_per_hour_usd / 60).quantize(_CENT, rounding=ROUND_HALF_EVEN)
    return RoiFigures(
        workflow=workflow,
        tasks_resolved=figures.successful,
        escalations=figures.escalations,
        minutes_saved=minutes,
        cost_avoided_usd=avoided,
        agent_cost_usd=figures.cost_usd,
        net_value_usd=avoided - figures.cost_usd,
    )


def _roi_total(parts: list[RoiFigures]) -> RoiFigures:
    return RoiFigures(
        workflow=None,
        tasks_resolved=sum(p.tasks_resolved for p in parts),
        escalations=sum(p.escalations for p in parts),
        minutes_saved=sum((p.minutes_saved for p in parts), Decimal(0)),
        cost_avoided_usd=sum((p.cost_avoided_usd for p in parts), Decimal(0)),
        agent_cost_usd=sum((p.agent_cost_usd for p in parts), Decimal(0)),
        net_value_usd=sum((p.net_value_usd for p in parts), Decimal(0)),
    )


@dataclass(frozen=True, slots=True)
class Dashboard:
    now: datetime
    window: str
    #: the first hour the window counts (runs that started in the hours overlapping it)
    start: datetime
    step: timedelta
    tenant: str | None
    workflow: str | None
    figures: Figures
    spend_by_tenant: dict[str, Decimal]
    spend_by_workflow: dict[str, Decimal]
    spend_by_route: dict[str, Decimal]
    drift: tuple[Drift, ...]
    slo: tuple[TargetStatus, ...]
    series: tuple[Point, ...]
    #: per workflow with an ``roi:`` and runs in the window, and their sum
    roi: tuple[RoiFigures, ...]
    roi_total: RoiFigures | None
    #: workflows with runs in the window and no ``roi:`` in their spec
    roi_missing: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return self.figures.empty

    def to_json(self) -> dict[str, Any]:
        def money(d: Mapping[str, Decimal]) -> dict[str, str]:
            return {k: usd_text(v) for k, v in d.items()}

        return {
            "now": self.now.isoformat(),
            "window": self.window,
            "start": self.start.isoformat(),
            "step_s": int(self.step.total_seconds()),
            "tenant": self.tenant,
            "workflow": self.workflow,
            "empty": self.empty,
            "figures": self.figures.to_json(),
            "spend_by_tenant": money(self.spend_by_tenant),
            "spend_by_workflow": money(self.spend_by_workflow),
            "spend_by_route": money(self.spend_by_route),
            "drift": [d.to_json() for d in self.drift],
            "slo": [t.to_json() for t in self.slo],
            "series": [p.to_json() for p in self.series],
            "roi": [r.to_json() for r in self.roi],
            "roi_total": None if self.roi_total is None else self.roi_total.to_json(),
            "roi_missing": list(self.roi_missing),
        }


def _by_spend(totals: Mapping[str, int]) -> dict[str, Decimal]:
    ranked = sorted(((k, v) for k, v in totals.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return {k: _usd(v) for k, v in ranked}


def _slo_status(workflow: str, slo: SLO, figures: SloFigures) -> list[TargetStatus]:
    found = []
    for target, (name, at_least) in TARGETS.items():
        expected = getattr(slo, target)
        if expected is None:
            continue
        measured = figures.value(name)
        if measured is None:
            status = "no data"
        else:
            missed = measured < expected if at_least else measured > expected
            status = "missed" if missed else "met"
        found.append(TargetStatus(workflow, target, name, float(expected), measured, status))
    return found


def _series(
    store: Store,
    start: int,
    step: int,
    now: datetime,
    *,
    tenant: str | None,
    workflow: str | None,
) -> tuple[Point, ...]:
    period = slo_rollups.c.bucket - slo_rollups.c.bucket % step
    query = (
        select(period, slo_rollups.c.metric, slo_rollups.c.label, func.sum(slo_rollups.c.value))
        .where(slo_rollups.c.bucket >= start, slo_rollups.c.metric.in_(_SERIES_METRICS))
        .group_by(period, slo_rollups.c.metric, slo_rollups.c.label)
    )
    if tenant is not None:
        query = query.where(slo_rollups.c.tenant == tenant)
    if workflow is not None:
        query = query.where(slo_rollups.c.workflow == workflow)
    sums: dict[int, _Sums] = {}
    with store.read() as conn:
        for at, metric, label, value in conn.execute(query):
            if value:
                sums.setdefault(int(at), _Sums()).add(metric, label, int(value))
    first = start - start % step
    last = int(now.timestamp())
    points = []
    for at in range(first, last - last % step + 1, step):
        s = sums.get(at, _Sums())
        finished, successful = s.get("runs_finished"), s.get("runs_succeeded")
        points.append(
            Point(
                start=hour_datetime(max(at, start)),
                runs_started=s.get("runs_started"),
                runs_finished=finished,
                successful=successful,
                success_rate=_ratio(successful, finished),
                escalations=s.get("escalations"),
                escalation_rate=_ratio(s.get("escalations"), s.get("actions")),
                cost_usd=_usd(s.get("spend_nusd")),
                p95_latency_ms=_quantile(s.labelled.get("latency", {}), 95),
            )
        )
    return tuple(points)


def dashboard(
    store: Store,
    *,
    window: str = "7d",
    tenant: str | None = None,
    workflow: str | None = None,
    targets: Mapping[str, SLO] | None = None,
    roi: Mapping[str, ROI | None] | None = None,
    now: datetime | None = None,
) -> Dashboard:
    """The dashboards of ``window`` (1h, 7d, 30d) for the runs of ``tenant`` and
    ``workflow`` (None: all); ``targets`` and ``roi``: each loaded workflow's ``slo:`` and
    ``roi:``."""
    window = parse_window(window)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise InvalidInputError("now must be timezone-aware (UTC)")
    starts = {name: window_start(now, length) for name, length in WINDOWS.items()}
    groups = read_sums(store, starts, tenant=tenant, workflow=workflow)

    chosen = [(key, windows[window]) for key, windows in groups.items()]
    figures = Figures.of(_merged(s for _, s in chosen))
    by_tenant: dict[str, int] = {}
    by_workflow: dict[str, int] = {}
    per_workflow: dict[str, list[_Sums]] = {}
    for (wf, tn, _), s in chosen:
        spent = s.get("spend_nusd")
        by_tenant[tn] = by_tenant.get(tn, 0) + spent
        by_workflow[wf] = by_workflow.get(wf, 0) + spent
        per_workflow.setdefault(wf, []).append(s)
    routes = dict(_merged(s for _, s in chosen).labelled.get("spend_route", {}))
    unattributed = sum(by_workflow.values()) - sum(routes.values())
    if unattributed > 0:
        routes[UNATTRIBUTED] = unattributed

    week = SloFigures.of(_merged(w["7d"] for w in groups.values()))
    month = SloFigures.of(_merged(w["30d"] for w in groups.values()))
    change = _drift(week, month)
    drift = tuple(
        Drift(name, week.value(name), month.value(name), change.get(name)) for name in DRIFTED
    )

    status: list[TargetStatus] = []
    rois: list[RoiFigures] = []
    missing: list[str] = []
    for wf, parts in sorted(per_workflow.items()):
        merged = _merged(parts)
        slo = (targets or {}).get(wf)
        if slo is not None:
            status.extend(_slo_status(wf, slo, SloFigures.of(merged)))
        mine = Figures.of(merged)
        if mine.empty:
            continue
        baseline = (roi or {}).get(wf)
        if baseline is None:
            missing.append(wf)
        else:
            rois.append(roi_of(wf, baseline, mine))

    step = STEPS[window]
    series = _series(
        store,
        starts[window],
        int(step.total_seconds()),
        now,
        tenant=tenant,
        workflow=workflow,
    )
    return Dashboard(
        now=now,
        window=window,
        start=hour_datetime(starts[window]),
        step=step,
        tenant=tenant,
        workflow=workflow,
        figures=figures,
        spend_by_tenant=_by_spend(by_tenant),
        spend_by_workflow=_by_spend(by_workflow),
        spend_by_route=_by_spend(routes),
        drift=drift,
        slo=tuple(status),
        series=series,
        roi=tuple(rois),
        roi_total=_roi_total(rois) if rois else None,
        roi_missing=tuple(missing),
    )


def rollup_tenants(store: Store, *, now: datetime | None = None) -> list[str]:
    """The tenants with rollups in the last 30 days (the console's tenant filter)."""
    start = window_start(now or datetime.now(UTC), WINDOWS["30d"])
    query = select(slo_rollups.c.tenant).where(slo_rollups.c.bucket >= start).distinct()
    with store.read() as conn:
        return sorted(t for (t,) in conn.execute(query))


__all__ = [
    "DRIFTED",
    "STEPS",
    "UNATTRIBUTED",
    "Dashboard",
    "Drift",
    "Figures",
    "Point",
    "RoiFigures",
    "TargetStatus",
    "dashboard",
    "parse_window",
    "roi_of",
    "rollup_tenants",
]
