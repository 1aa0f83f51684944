"""Live SLOs: the rollups (``_rollups``) summed over 1 h, 7 d and 30 d per workflow,
tenant and task type, judged against the spec's ``slo:`` targets, with the 7 d vs 30 d
change (drift).

A window of length W holds the runs that started in the hours overlapping
``[now - W, now]`` (rollups are hourly, so a window spans between W and W + 1 h). One
statement sums all three windows at once; its cost depends on the number of groups and
hours, not on the number of events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import case, func, select

from warden.economics._reports import usd_text
from warden.errors import InvalidInputError
from warden.spec._models import SLO
from warden.store import Store
from warden.store._tables import slo_rollups
from warden.telemetry._rollups import hour_of, upper_ms

WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
#: the figures drift is computed for (7 d against 30 d, percent)
DRIFTED = (
    "success_rate",
    "p50_latency_ms",
    "p95_latency_ms",
    "escalation_rate",
    "policy_violation_rate",
    "cost_per_task_usd",
)
_NANO = Decimal(10) ** 9


@dataclass(slots=True)
class _Sums:
    counts: dict[str, int] = field(default_factory=dict)
    labelled: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, metric: str, label: str, value: int) -> None:
        if label:
            into = self.labelled.setdefault(metric, {})
            into[label] = into.get(label, 0) + value
        else:
            self.counts[metric] = self.counts.get(metric, 0) + value

    def get(self, metric: str) -> int:
        return self.counts.get(metric, 0)


def _quantile(histogram: Mapping[str, int], percent: int) -> float | None:
    """Nearest rank over the merged buckets: the upper bound of the bucket holding the
    value at ``percent`` %."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = max(1, -(-percent * total // 100))
    seen = 0
    for bucket in sorted(histogram, key=int):
        seen += histogram[bucket]
        if seen >= rank:
            return round(upper_ms(int(bucket)), 3)
    return None  # pragma: no cover - rank <= total


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


@dataclass(frozen=True, slots=True)
class SloFigures:
    """One group's figures over one window."""

    runs_started: int
    runs_finished: int
    successful: int
    success_rate: float | None
    actions: int
    executed: int
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    escalations: int
    escalation_rate: float | None
    violations: int
    policy_violation_rate: float | None
    approvals_decided: dict[str, int]
    decision_p95_ms: float | None
    tool_errors: dict[str, int]
    blocked_by_rule: dict[str, int]
    denied: dict[str, int]
    cost_usd: Decimal
    #: spend of every run of the group per successful run (as ``warden costs``)
    cost_per_task_usd: Decimal | None
    unpriced_calls: int

    @classmethod
    def of(cls, sums: _Sums) -> SloFigures:
        latency = sums.labelled.get("latency", {})
        finished, successful = sums.get("runs_finished"), sums.get("runs_succeeded")
        actions = sums.get("actions")
        cost = Decimal(sums.get("spend_nusd")) / _NANO
        return cls(
            runs_started=sums.get("runs_started"),
            runs_finished=finished,
            successful=successful,
            success_rate=_ratio(successful, finished),
            actions=actions,
            executed=sums.get("executed"),
            p50_latency_ms=_quantile(latency, 50),
            p95_latency_ms=_quantile(latency, 95),
            escalations=sums.get("escalations"),
            escalation_rate=_ratio(sums.get("escalations"), actions),
            violations=sums.get("violations"),
            policy_violation_rate=_ratio(sums.get("violations"), actions),
            approvals_decided=dict(sorted(sums.labelled.get("approvals_decided", {}).items())),
            decision_p95_ms=_quantile(sums.labelled.get("decision_wait", {}), 95),
            tool_errors=dict(sorted(sums.labelled.get("tool_errors", {}).items())),
            blocked_by_rule=dict(sorted(sums.labelled.get("blocked", {}).items())),
            denied=dict(sorted(sums.labelled.get("denied", {}).items())),
            cost_usd=cost,
            cost_per_task_usd=cost / successful if successful else None,
            unpriced_calls=sums.get("unpriced_calls"),
        )

    def value(self, name: str) -> float | None:
        raw = getattr(self, name)
        return None if raw is None else float(raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs_started": self.runs_started,
            "runs_finished": self.runs_finished,
            "successful": self.successful,
            "success_rate": self.success_rate,
            "actions": self.actions,
            "executed": self.executed,
            "p50_latency_ms": self.p50_latency_ms,
            "p95_latency_ms": self.p95_latency_ms,
            "escalations": self.escalations,
            "escalation_rate": self.escalation_rate,
            "violations": self.violations,
            "policy_violation_rate": self.policy_violation_rate,
            "approvals_decided": self.approvals_decided,
            "decision_p95_ms": self.decision_p95_ms,
            "tool_errors": self.tool_errors,
            "blocked_by_rule": self.blocked_by_rule,
            "denied": self.denied,
            "cost_usd": usd_text(self.cost_usd),
            "cost_per_task_usd": None
            if self.cost_per_task_usd is None
            else usd_text(self.cost_per_task_usd),
            "unpriced_calls": self.unpriced_calls,
        }


#: SLO target -> (figure, True when the figure must be at least the target)
TARGETS: dict[str, tuple[str, bool]] = {
    "success_rate": ("success_rate", True),
    "p50_latency_ms": ("p50_latency_ms", False),
    "p95_latency_ms": ("p95_latency_ms", False),
    "escalation_rate_max": ("escalation_rate", False),
    "policy_violation_rate_max": ("policy_violation_rate", False),
    "cost_per_task_usd": ("cost_per_task_usd", False),
}


@dataclass(frozen=True, slots=True)
class Breach:
    window: str
    target: str
    figure: str
    expected: float
    measured: float

    def to_json(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "target": self.target,
            "figure": self.figure,
            "expected": self.expected,
            "measured": self.measured,
        }


def breaches(slo: SLO, figures: Mapping[str, SloFigures]) -> list[Breach]:
    """The targets of ``slo`` each window's figures miss (a figure with no data misses
    nothing)."""
    found = []
    for window, fig in figures.items():
        for target, (name, at_least) in TARGETS.items():
            expected = getattr(slo, target)
            measured = fig.value(name)
            if expected is None or measured is None:
                continue
            missed = measured < expected if at_least else measured > expected
            if missed:
                found.append(Breach(window, target, name, float(expected), measured))
    return found


@dataclass(frozen=True, slots=True)
class SloGroup:
    key: dict[str, str | None]
    windows: dict[str, SloFigures]
    #: percent change of each figure, 7 d against 30 d (None: nothing to compare)
    drift: dict[str, float | None]
    #: the workflow's targets (None: the workflow is not loaded here, or declares none)
    targets: dict[str, float] | None
    breaches: tuple[Breach, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": dict(self.key),
            "windows": {w: f.to_json() for w, f in self.windows.items()},
            "drift": dict(self.drift),
            "targets": self.targets,
            "breaches": [b.to_json() for b in self.breaches],
        }


@dataclass(frozen=True, slots=True)
class SloReport:
    now: datetime
    tenant: str | None
    workflow: str | None
    groups: tuple[SloGroup, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "windows": {
                name: hour_datetime(window_start(self.now, length)).isoformat()
                for name, length in WINDOWS.items()
            },
            "tenant": self.tenant,
            "workflow": self.workflow,
            "groups": [g.to_json() for g in self.groups],
        }


def window_start(now: datetime, length: timedelta) -> int:
    """The first hour bucket of the window of ``length`` ending ``now``."""
    return hour_of(now - length)


def hour_datetime(bucket: int) -> datetime:
    return datetime.fromtimestamp(bucket, UTC)


def _drift(recent: SloFigures, longer: SloFigures) -> dict[str, float | None]:
    change: dict[str, float | None] = {}
    for name in DRIFTED:
        now, base = recent.value(name), longer.value(name)
        if now is None or base is None or base == 0:
            change[name] = None
        else:
            pct = Decimal(str((now - base) / base * 100))
            change[name] = float(pct.quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN))
    return change


def read_sums(
    store: Store,
    starts: Mapping[str, int],
    *,
    tenant: str | None = None,
    workflow: str | None = None,
) -> dict[tuple[str, str, str], dict[str, _Sums]]:
    """Each group's sums per window, ``starts``: window name -> first hour bucket."""
    names = list(starts)
    earliest = min(starts.values())
    columns = [
        func.sum(case((slo_rollups.c.bucket >= starts[n], slo_rollups.c.value), else_=0))
        for n in names
    ]
    query = (
        select(
            slo_rollups.c.workflow,
            slo_rollups.c.tenant,
            slo_rollups.c.task_type,
            slo_rollups.c.metric,
            slo_rollups.c.label,
            *columns,
        )
        .where(slo_rollups.c.bucket >= earliest)
        .group_by(
            slo_rollups.c.workflow,
            slo_rollups.c.tenant,
            slo_rollups.c.task_type,
            slo_rollups.c.metric,
            slo_rollups.c.label,
        )
    )
    if tenant is not None:
        query = query.where(slo_rollups.c.tenant == tenant)
    if workflow is not None:
        query = query.where(slo_rollups.c.workflow == workflow)
    found: dict[tuple[str, str, str], dict[str, _Sums]] = {}
    with store.read() as conn:
        for row in conn.execute(query):
            wf, tn, tt, metric, label, *values = row
            windows = found.setdefault((wf, tn, tt), {n: _Sums() for n in names})
            for name, value in zip(names, values, strict=True):
                if value:
                    windows[name].add(metric, label, int(value))
    return found


def slo_report(
    store: Store,
    *,
    targets: Mapping[str, SLO] | None = None,
    tenant: str | None = None,
    workflow: str | None = None,
    now: datetime | None = None,
) -> SloReport:
    """The SLO figures of every group (workflow, tenant, task type) with runs in the last
    30 days, judged against ``targets`` (workflow -> its spec's ``slo:``)."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise InvalidInputError("now must be timezone-aware (UTC)")
    starts = {name: window_start(now, length) for name, length in WINDOWS.items()}
    sums = read_sums(store, starts, tenant=tenant, workflow=workflow)
    groups = []
    for (wf, tn, tt), windows in sorted(sums.items()):
        figures = {name: SloFigures.of(s) for name, s in windows.items()}
        slo = (targets or {}).get(wf)
        declared = None
        if slo is not None:
            declared = {k: float(v) for k, v in slo.model_dump().items() if v is not None}
        groups.append(
            SloGroup(
                key={"workflow": wf, "tenant": tn, "task_type": tt or None},
                windows=figures,
                drift=_drift(figures["7d"], figures["30d"]),
                targets=declared or None,
                breaches=tuple(breaches(slo, figures)) if slo is not None else (),
            )
        )
    return SloReport(now, tenant, workflow, tuple(groups))


__all__ = [
    "DRIFTED",
    "TARGETS",
    "WINDOWS",
    "Breach",
    "SloFigures",
    "SloGroup",
    "SloReport",
    "breaches",
    "read_sums",
    "slo_report",
    "window_start",
]
