"""Alerts: the spec's ``alerts:`` evaluated, each firing once and resolving, announced by
signed webhooks (``alert_fired``, ``alert_resolved``) through the outbox.

State lives in ``alert_state``, one row per alert and subject. A change is conditional
(insert where no row is, or update from the other state) and the webhook is enqueued in
the same transaction, so when several gateways or replicas see the same condition, exactly
one announces it.

Event-driven kinds are evaluated on each batch the rollups sink writes (``on_batch``):
unauthorized attempts, tool failures, runaway runs and budget thresholds. Time-based work
runs in ``evaluate`` (``warden serve`` calls it every ``alert_interval_s``): the windows of
the event-driven kinds passing (resolution), the approval queue, SLO breaches and cost
growth week over week.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, delete, func, insert, select, update

from warden import notify
from warden.economics._reports import usd_text
from warden.spec import LoadedSpec
from warden.spec._alerts import (
    ApprovalQueueAlert,
    BudgetThresholdAlert,
    CostGrowthAlert,
    RunawayAlert,
    SloBreachAlert,
    ToolFailuresAlert,
    UnauthorizedAlert,
)
from warden.spec._economics import BudgetPeriod
from warden.spec._models import SLO, WorkflowSpec
from warden.store import Store
from warden.store._ops import insert_if_absent
from warden.store._tables import (
    alert_hits,
    alert_state,
    approvals,
    parse_utc_text,
    runs,
    utc_text,
)
from warden.telemetry._slo import SloFigures, read_sums, slo_report, window_start

if TYPE_CHECKING:
    from warden.telemetry._rollups import RunKey, _Pending

log = logging.getLogger("warden.telemetry")
A = TypeVar("A")
_SPEND_CACHE = 50_000


def alert_key(workflow: str, name: str, subject: str) -> str:
    return f"{workflow}|{name}|{subject}"[:600]


def fire(
    conn: Connection,
    *,
    workflow: str,
    name: str,
    kind: str,
    tenant: str,
    subject: str,
    detail: Mapping[str, Any],
    now: datetime,
) -> bool:
    """Mark the alert firing unless it is; True (and its webhook enqueued) if this call
    changed it."""
    key = alert_key(workflow, name, subject)
    text = json.dumps(dict(detail), sort_keys=True, default=str)
    won = insert_if_absent(
        conn,
        alert_state,
        {
            "alert_key": key,
            "workflow": workflow,
            "name": name,
            "kind": kind,
            "tenant": tenant,
            "subject": subject,
            "state": "firing",
            "fired_at": now,
            "resolved_at": None,
            "times_fired": 1,
            "detail": text,
        },
    )
    if not won:
        won = (
            conn.execute(
                update(alert_state)
                .where(alert_state.c.alert_key == key, alert_state.c.state == "resolved")
                .values(
                    state="firing",
                    fired_at=now,
                    resolved_at=None,
                    detail=text,
                    times_fired=alert_state.c.times_fired + 1,
                )
                .returning(alert_state.c.alert_key)
            ).first()
            is not None
        )
    if won:
        notify.enqueue(
            conn,
            tenant=tenant,
            kind="alert_fired",
            now=now,
            payload={
                "alert": name,
                "kind": kind,
                "workflow": workflow,
                "tenant": tenant,
                "subject": subject,
                "state": "firing",
                "fired_at": utc_text(now),
                "detail": dict(detail),
            },
        )
    return won


def resolve(conn: Connection, key: str, now: datetime) -> bool:
    """Mark a firing alert resolved; True (and its webhook enqueued) if this call did."""
    row = (
        conn.execute(
            update(alert_state)
            .where(alert_state.c.alert_key == key, alert_state.c.state == "firing")
            .values(state="resolved", resolved_at=now)
            .returning(
                alert_state.c.workflow,
                alert_state.c.name,
                alert_state.c.kind,
                alert_state.c.tenant,
                alert_state.c.subject,
                alert_state.c.fired_at,
                alert_state.c.detail,
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return False
    notify.enqueue(
        conn,
        tenant=row["tenant"],
        kind="alert_resolved",
        now=now,
        payload={
            "alert": row["name"],
            "kind": row["kind"],
            "workflow": row["workflow"],
            "tenant": row["tenant"],
            "subject": row["subject"],
            "state": "resolved",
            "fired_at": utc_text(row["fired_at"]),
            "resolved_at": utc_text(now),
            "detail": json.loads(row["detail"]),
        },
    )
    return True


def firing(conn: Connection, workflow: str, name: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(alert_state).where(
            alert_state.c.workflow == workflow,
            alert_state.c.name == name,
            alert_state.c.state == "firing",
        )
    ).mappings()
    return [dict(r) for r in rows]


def _us(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


class Alerts:
    """The alerts of the workflows ``watch``-ed, over one store."""

    def __init__(self, store: Store, *, clock: Any = None) -> None:
        self.store = store
        self.clock = clock or (lambda: datetime.now(UTC))
        self.specs: dict[str, WorkflowSpec] = {}
        # Spend per run seen by this process (runaway_run's max_cost_usd), nano-USD.
        self._spend: OrderedDict[str, int] = OrderedDict()
        # runaway alerts this process asked the store to fire: not asked again each second
        # while the run goes on (the store's state decides; this only saves writes)
        self._runaway: set[str] = set()
        self._lock = threading.Lock()

    def watch(self, loaded: LoadedSpec | WorkflowSpec) -> None:
        spec = loaded.spec if isinstance(loaded, LoadedSpec) else loaded
        self.specs[spec.name] = spec

    def _alerting(self, workflow: str) -> bool:
        spec = self.specs.get(workflow)
        return spec is not None and bool(spec.alerts)

    def _of(self, workflow: str, kind: type[A]) -> list[A]:
        spec = self.specs.get(workflow)
        return [a for a in spec.alerts if isinstance(a, kind)] if spec is not None else []

    # -- event-driven ---------------------------------------------------------------

    def on_batch(self, items: Sequence[tuple[RunKey, str, _Pending]]) -> None:
        """The alerts a written batch of the rollups sink may fire or resolve."""
        if not any(self._alerting(key.workflow) for key, _, _ in items):
            return
        with self._lock:
            now = self.clock()
            hits: list[tuple[str, str, str, Any, int]] = []  # workflow, tenant, subject, alert, µs
            to_fire: list[dict[str, Any]] = []
            to_resolve: list[str] = []
            for key, run_id, p in items:
                wf = key.workflow
                for what, subject, ts in p.hits:
                    if what == "unauthorized_attempt":
                        for u in self._of(wf, UnauthorizedAlert):
                            hits.append((wf, p.tenant, subject, u, ts))
                    else:
                        for t in self._of(wf, ToolFailuresAlert):
                            if not t.tools or subject in t.tools:
                                hits.append((wf, "*", subject, t, ts))
                runaway = self._of(wf, RunawayAlert)
                spent = self._spent(run_id, p.counts.get(("spend_nusd", ""), 0)) if runaway else 0
                for r in runaway:
                    subject = f"{p.tenant}/{run_id}"
                    key_of_run = alert_key(wf, r.key, subject)
                    if p.finished:
                        to_resolve.append(key_of_run)
                        self._runaway.discard(key_of_run)
                        continue
                    if key_of_run in self._runaway:  # fired (by this process or another)
                        continue
                    over = []
                    if r.max_steps is not None and p.step > r.max_steps:
                        over.append(f"step {p.step} past max_steps {r.max_steps}")
                    if r.max_cost_usd is not None and Decimal(spent) / 10**9 > r.max_cost_usd:
                        over.append(
                            f"spent ${usd_text(Decimal(spent) / 10**9)} past "
                            f"max_cost_usd {r.max_cost_usd}"
                        )
                    if over:
                        if len(self._runaway) >= _SPEND_CACHE:  # runs ended elsewhere
                            self._runaway.clear()
                        self._runaway.add(key_of_run)
                        to_fire.append(
                            _firing(wf, r, p.tenant, subject, {"run_id": run_id, "why": over})
                        )
                for b in self._of(wf, BudgetThresholdAlert):
                    for c in p.crossed:
                        subject = f"{p.tenant}/{c.get('budget')}/{c.get('unit')}/" + str(
                            c.get("threshold")
                        )
                        if _budget_period(self.specs[wf], c.get("budget")) == BudgetPeriod.RUN:
                            subject += f"/{run_id}"
                        to_fire.append(_firing(wf, b, p.tenant, subject, {**c, "run_id": run_id}))
            if not (hits or to_fire or to_resolve):
                return  # no transaction: this runs every second in every process
            with self.store.write(durable=False) as conn:
                _record_hits(conn, hits, now)
                for item in to_fire:
                    fire(conn, now=now, **item)
                for done in to_resolve:
                    resolve(conn, done, now)

    def on_refusals(self, refusals: Sequence[tuple[str, str]]) -> None:
        """Requests the server refused for reaching another tenant's or agent's objects
        (``(tenant, why)``): unauthorized attempts of the key's tenant, for every workflow
        with an ``unauthorized_attempt`` alert."""
        now = self.clock()
        ts = _us(now)
        hits = [
            (wf, tenant, tenant, alert, ts)
            for wf in self.specs
            for alert in self._of(wf, UnauthorizedAlert)
            for tenant, _ in refusals
        ]
        if hits:
            with self._lock, self.store.write(durable=False) as conn:
                _record_hits(conn, hits, now)

    def _spent(self, run_id: str, nano: int) -> int:
        total = self._spend.get(run_id, 0) + nano
        self._spend[run_id] = total
        self._spend.move_to_end(run_id)
        if len(self._spend) > _SPEND_CACHE:
            self._spend.popitem(last=False)
        return total

    # -- time-based -----------------------------------------------------------------

    def evaluate(self, now: datetime | None = None) -> None:
        """Resolve what passed and fire what the store now shows (any replica may run it;
        every change is conditional)."""
        now = now or self.clock()
        for wf, spec in self.specs.items():
            for alert in spec.alerts:
                try:
                    self._evaluate(wf, spec, alert, now)
                except Exception:
                    log.exception("evaluating alert %s of %s failed; will retry", alert.key, wf)

    def _evaluate(self, wf: str, spec: WorkflowSpec, alert: Any, now: datetime) -> None:
        with self.store.write(durable=False) as conn:
            if isinstance(alert, UnauthorizedAlert | ToolFailuresAlert):
                since = _us(now - alert.within)
                for row in firing(conn, wf, alert.key):
                    hit_key = alert_key(wf, alert.key, row["subject"])
                    if _count(conn, hit_key, since) < alert.count:
                        resolve(conn, row["alert_key"], now)
                prefix = alert_key(wf, alert.key, "")
                conn.execute(
                    delete(alert_hits).where(
                        alert_hits.c.hit_key.startswith(prefix, autoescape=True),
                        alert_hits.c.ts_us < since,
                    )
                )
            elif isinstance(alert, RunawayAlert):
                self._resolve_ended(conn, wf, alert.key, now)
            elif isinstance(alert, ApprovalQueueAlert):
                _queue(conn, wf, alert, now)
            elif isinstance(alert, BudgetThresholdAlert):
                for row in firing(conn, wf, alert.key):
                    detail = json.loads(row["detail"])
                    period = _budget_period(spec, detail.get("budget"))
                    if period == BudgetPeriod.RUN:
                        if _run_ended(conn, str(detail.get("run_id"))):
                            resolve(conn, row["alert_key"], now)
                    elif period is None or now >= _period_end(period, row["fired_at"]):
                        resolve(conn, row["alert_key"], now)
            elif isinstance(alert, SloBreachAlert):
                _slo_breaches(conn, self.store, wf, spec.slo, alert, now)
            elif isinstance(alert, CostGrowthAlert):
                _cost_growth(conn, self.store, wf, alert, now)

    def _resolve_ended(self, conn: Connection, wf: str, name: str, now: datetime) -> None:
        for row in firing(conn, wf, name):
            run_id = row["subject"].rsplit("/", 1)[-1]
            if _run_ended(conn, run_id):
                resolve(conn, row["alert_key"], now)


def _record_hits(
    conn: Connection, hits: Sequence[tuple[str, str, str, Any, int]], now: datetime
) -> None:
    """Store occurrences ``(workflow, tenant, subject, alert, µs)`` and fire the windowed
    alerts they take to their count."""
    for wf, _, subject, alert, ts in hits:
        conn.execute(insert(alert_hits).values(hit_key=alert_key(wf, alert.key, subject), ts_us=ts))
    seen: set[str] = set()
    for wf, tenant, subject, alert, _ in hits:
        hit_key = alert_key(wf, alert.key, subject)
        if hit_key in seen:
            continue
        seen.add(hit_key)
        count = _count(conn, hit_key, _us(now - alert.within))
        if count >= alert.count:
            fire(
                conn,
                workflow=wf,
                name=alert.key,
                kind=alert.kind,
                tenant=tenant,
                subject=subject,
                detail={"count": count, "within_s": alert.within.total_seconds()},
                now=now,
            )


def _firing(
    wf: str, alert: Any, tenant: str, subject: str, detail: dict[str, Any]
) -> dict[str, Any]:
    return {
        "workflow": wf,
        "name": alert.key,
        "kind": alert.kind,
        "tenant": tenant,
        "subject": subject,
        "detail": detail,
    }


def _count(conn: Connection, hit_key: str, since_us: int) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(alert_hits)
            .where(alert_hits.c.hit_key == hit_key, alert_hits.c.ts_us >= since_us)
        ).scalar_one()
    )


def _run_ended(conn: Connection, run_id: str) -> bool:
    status = conn.execute(select(runs.c.status).where(runs.c.run_id == run_id)).scalar()
    return status != "running"


def _budget_period(spec: WorkflowSpec, name: Any) -> BudgetPeriod | None:
    for budget in spec.budgets:
        if budget.name == name:
            return budget.period
    return None


def _period_end(period: BudgetPeriod, fired: datetime) -> datetime:
    day = fired.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == BudgetPeriod.CALENDAR_DAY:
        return day + timedelta(days=1)
    if period == BudgetPeriod.CALENDAR_WEEK:
        return day + timedelta(days=7 - day.weekday())
    if period == BudgetPeriod.CALENDAR_MONTH:
        first = day.replace(day=1)
        return (first + timedelta(days=32)).replace(day=1)
    lengths = {"rolling_day": 1, "rolling_week": 7, "rolling_month": 30}
    return fired + timedelta(days=lengths.get(period.value, 1))


def _queue(conn: Connection, wf: str, alert: ApprovalQueueAlert, now: datetime) -> None:
    depth, oldest = conn.execute(
        select(func.count(), func.min(approvals.c.created_at)).where(
            approvals.c.workflow == wf, approvals.c.state == "pending"
        )
    ).one()
    why = []
    if alert.max_depth is not None and depth > alert.max_depth:
        why.append(f"{depth} pending, more than max_depth {alert.max_depth}")
    age = None
    if oldest is not None:
        age = now - (oldest if isinstance(oldest, datetime) else parse_utc_text(oldest))
        if alert.max_age is not None and age > alert.max_age:
            why.append(f"oldest pending for {int(age.total_seconds())} s, past max_age")
    key = alert_key(wf, alert.key, "queue")
    if why:
        detail = {
            "depth": depth,
            "oldest_age_s": None if age is None else int(age.total_seconds()),
            "why": why,
        }
        fire(
            conn,
            workflow=wf,
            name=alert.key,
            kind=alert.kind,
            tenant="*",
            subject="queue",
            detail=detail,
            now=now,
        )
    else:
        resolve(conn, key, now)


def _fire_and_resolve(
    conn: Connection,
    wf: str,
    alert: SloBreachAlert | CostGrowthAlert,
    current: dict[str, tuple[str, dict[str, Any]]],
    now: datetime,
) -> None:
    """Fire ``alert`` for each subject that holds now (``subject -> (tenant, detail)``) and
    resolve the ones firing that no longer hold."""
    for subject, (tenant, detail) in current.items():
        fire(
            conn,
            workflow=wf,
            name=alert.key,
            kind=alert.kind,
            tenant=tenant,
            subject=subject,
            detail=detail,
            now=now,
        )
    for row in firing(conn, wf, alert.key):
        if row["subject"] not in current:
            resolve(conn, row["alert_key"], now)


def _slo_breaches(
    conn: Connection, store: Store, wf: str, slo: SLO, alert: SloBreachAlert, now: datetime
) -> None:
    report = slo_report(store, targets={wf: slo}, workflow=wf, now=now)
    current: dict[str, tuple[str, dict[str, Any]]] = {}
    for group in report.groups:
        figures = group.windows[alert.window]
        if figures.runs_started < alert.min_runs:
            continue
        for b in group.breaches:
            if b.window != alert.window:
                continue
            tenant = str(group.key["tenant"])
            subject = f"{tenant}/{group.key['task_type'] or '-'}/{b.target}"
            current[subject] = (tenant, {**b.to_json(), "runs": figures.runs_started})
    _fire_and_resolve(conn, wf, alert, current, now)


def _cost_growth(
    conn: Connection, store: Store, wf: str, alert: CostGrowthAlert, now: datetime
) -> None:
    week = timedelta(days=7)
    starts = {"recent": window_start(now, week), "both": window_start(now, 2 * week)}
    sums = read_sums(store, starts, workflow=wf)
    current: dict[str, tuple[str, dict[str, Any]]] = {}
    for (_, tenant, task_type), windows in sums.items():
        recent = SloFigures.of(windows["recent"])
        both = windows["both"]
        for metric, value in windows["recent"].counts.items():
            both.counts[metric] = both.counts.get(metric, 0) - value
        before = SloFigures.of(both)
        now_cost, old_cost = recent.cost_per_task_usd, before.cost_per_task_usd
        if now_cost is None or old_cost is None or old_cost == 0:
            continue
        pct = (now_cost - old_cost) / old_cost * 100
        if pct > alert.max_increase_pct:
            subject = f"{tenant}/{task_type or '-'}"
            current[subject] = (
                tenant,
                {
                    "cost_per_task_usd": usd_text(now_cost),
                    "previous_cost_per_task_usd": usd_text(old_cost),
                    "increase_pct": float(pct.quantize(Decimal("0.1"))),
                },
            )
    _fire_and_resolve(conn, wf, alert, current, now)


def list_alerts(
    store: Store, *, tenant: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    """The alerts in the store, newest first (for the API and the CLI)."""
    query = select(alert_state).order_by(alert_state.c.fired_at.desc())
    if tenant is not None:
        query = query.where(alert_state.c.tenant == tenant)
    if state is not None:
        query = query.where(alert_state.c.state == state)
    with store.read() as conn:
        rows: Iterable[Any] = conn.execute(query).mappings()
        return [
            {
                "workflow": r["workflow"],
                "alert": r["name"],
                "kind": r["kind"],
                "tenant": r["tenant"],
                "subject": r["subject"],
                "state": r["state"],
                "fired_at": r["fired_at"].isoformat(),
                "resolved_at": None if r["resolved_at"] is None else r["resolved_at"].isoformat(),
                "times_fired": r["times_fired"],
                "detail": json.loads(r["detail"]),
            }
            for r in rows
        ]


__all__ = ["Alerts", "alert_key", "fire", "firing", "list_alerts", "resolve"]
