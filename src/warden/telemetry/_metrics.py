"""Prometheus metrics of governed calls, runs, approvals, budgets and the ledger.

A call's counters and histograms are not updated on its path: the call, its result and
its stage marks are queued (one ``deque.append``) and counted before a scrape answers,
and every 0.5 s by a daemon thread where another process may answer the scrape
(``Metrics.start``); updating them inline cost ~12 µs a governed read, a fifth of it,
measured. What the store already knows
(approvals pending and their age, SLA breaches, active switches, budgets of a workflow or
of everything) is read when scraped, by ``StoreCollector``, so no process has to keep it
up to date.

Under ``warden serve --workers N`` every worker writes its series to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, set up by ``warden
serve``), and whichever worker answers ``/metrics`` adds them all up: a count is the
count of every worker, not of the one that was asked.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, case, func, select

from warden.events import EventKind
from warden.pipeline._call import Call, RunState
from warden.results import Allowed, Denied, Drafted, Failed, FailureKind, Pending, Result
from warden.store._tables import approvals, switches
from warden.telemetry._traces import exclusive_times

log = logging.getLogger("warden.telemetry")

if TYPE_CHECKING:
    from warden.gateway import Gateway
    from warden.ledger import LedgerWriter
    from warden.store import Store

#: seconds; a governed read takes ~50 µs in process, a stage a few µs, an approval hours
#: a decade each, 10 µs to 100 s: a series costs a line per bucket in every scrape, and
#: 100 tools times 20 buckets made a scrape of a 10-workflow server twice as long
_STAGE_BUCKETS = (0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
_CALL_BUCKETS = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
#: failures of the tool itself (what its circuit breaker counts), not of the governance
TOOL_ERRORS = frozenset(
    {
        FailureKind.TOOL_ERROR,
        FailureKind.TIMEOUT,
        FailureKind.RETRIES_EXHAUSTED,
        FailureKind.CIRCUIT_OPEN,
        FailureKind.OUTPUT_SCHEMA_ERROR,
        FailureKind.UPSTREAM_ERROR,
        FailureKind.OUTCOME_UNKNOWN,
    }
)


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, when it is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The metric families of one process, shared by the ``MetricsSink`` of every
    workflow it serves. ``tenant_label``: calls, denials, errors, approvals and spend
    carry a ``tenant`` label (off by default: tenants can be many; an operator setting).
    """

    def __init__(self, *, tenant_label: bool = False) -> None:
        self.tenant_label = tenant_label
        # ``_created`` series double the lines of every counter and histogram child, and a
        # scrape's cost is per line (~12 µs, measured); Prometheus does not need them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        # Own registry: two Metrics in one process (tests, two servers) do not collide in
        # the global one; in multiprocess mode the values live in the files anyway.
        self.registry = CollectorRegistry(auto_describe=True)
        t = ("tenant",) if tenant_label else ()
        reg = self.registry
        self.calls = Counter(
            "warden_calls",
            "Governed calls by workflow, tool, policy effect and outcome.",
            ("workflow", "tool", "effect", "outcome", *t),
            registry=reg,
        )
        self.denials = Counter(
            "warden_denials",
            "Calls denied, by kind (policy_block, scope_denied, killed, unknown_tool, ...).",
            ("workflow", "tool", "kind", *t),
            registry=reg,
        )
        self.failures = Counter(
            "warden_failures",
            "Calls that failed, by kind.",
            ("workflow", "tool", "kind", *t),
            registry=reg,
        )
        self.tool_errors = Counter(
            "warden_tool_errors",
            "Failures of the tool itself (errors, timeouts, exhausted retries, open circuit).",
            ("workflow", "tool", "kind", *t),
            registry=reg,
        )
        self.call_seconds = Histogram(
            "warden_call_duration_seconds",
            "Time a governed call spent in the pipeline (without an approval's wait).",
            ("workflow",),
            buckets=_CALL_BUCKETS,
            registry=reg,
        )
        # Per tool a sum and a count (its mean), not buckets: 100 tools' histograms were
        # over half of a scrape's lines.
        self.tool_seconds = Summary(
            "warden_tool_call_duration_seconds",
            "Time a governed call of the tool spent in the pipeline (sum and count).",
            ("workflow", "tool"),
            registry=reg,
        )
        self.stage_seconds = Histogram(
            "warden_stage_duration_seconds",
            "Time each pipeline stage took itself (without the stages it wraps).",
            ("workflow", "stage"),
            buckets=_STAGE_BUCKETS,
            registry=reg,
        )
        self.approvals_requested = Counter(
            "warden_approvals_requested",
            "Approvals requested, by approver role.",
            ("workflow", "role", *t),
            registry=reg,
        )
        self.approval_wait = Histogram(
            "warden_approval_wait_seconds",
            "How long calls waited in process (wait_s) for a decision on their approval.",
            ("workflow", "role"),
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
            registry=reg,
        )
        self.approvals_decided = Counter(
            "warden_approvals_decided",
            "Approval decisions: approved, rejected, edited; expired; cancelled.",
            ("workflow", "decision"),
            registry=reg,
        )
        self.runs_started = Counter(
            "warden_runs_started", "Runs opened.", ("workflow",), registry=reg
        )
        self.runs_finished = Counter(
            "warden_runs_finished", "Runs finished, by outcome.", ("workflow", "outcome"),
            registry=reg,
        )  # fmt: skip
        self.spend = Counter(
            "warden_spend_usd",
            "What calls cost (USD): model calls as priced, tools with a cost: as reported.",
            ("workflow", "source", *t),
            registry=reg,
        )
        self.tokens = Counter(
            "warden_model_tokens",
            "Model tokens by model and direction (input, output).",
            ("workflow", "model", "direction"),
            registry=reg,
        )
        self.circuit_open = Gauge(
            "warden_circuit_open",
            "1 while a tool's circuit breaker is open for some tenant (in any live worker).",
            ("workflow", "tool"),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.ledger_lag = Gauge(
            "warden_ledger_flush_lag_seconds",
            "Age of the oldest ledger event buffered and not yet written (max over workers).",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self._ledgers: weakref.WeakSet[LedgerWriter] = weakref.WeakSet()
        self._refresher: threading.Thread | None = None
        self._closed = threading.Event()
        #: calls done and not yet counted: (sink, call, result, marks)
        self.queue: deque[tuple[MetricsSink, Call, Result | None, list[tuple[str | None, int]]]]
        self.queue = deque()
        self._drain_lock = threading.Lock()

    def sink(self, workflow: str, gateway: Gateway | None = None) -> MetricsSink:
        if gateway is not None:
            self._ledgers.add(gateway.svc.ledger)
        return MetricsSink(self, workflow, gateway)

    def watch_ledger(self, ledger: LedgerWriter) -> None:
        self._ledgers.add(ledger)

    def drain(self) -> None:
        """Count the calls queued so far."""
        queue = self.queue
        with self._drain_lock:
            while queue:
                sink, call, result, marks = queue.popleft()
                try:
                    sink.count(call, result, marks)
                except Exception:  # a call that cannot be counted must not stop the rest
                    log.exception("counting a call failed")

    def refresh(self) -> None:
        """Count the queued calls; set this process's gauges (the ledger's flush lag)."""
        self.drain()
        lag = 0.0
        now = datetime.now(UTC)
        for ledger in list(self._ledgers):
            since = ledger.buffered_since()
            if since is not None:
                lag = max(lag, (now - since).total_seconds())
        self.ledger_lag.set(lag)

    def start(self, every_s: float = 0.5) -> None:
        """Count queued calls and refresh this process's gauges every ``every_s`` in a
        daemon thread (so a scrape that another worker answers sees them)."""
        if self._refresher is not None:
            return

        def loop() -> None:
            while not self._closed.wait(every_s):
                self.refresh()

        self._refresher = threading.Thread(target=loop, name="warden-metrics", daemon=True)
        self._refresher.start()

    def close(self) -> None:
        """Count what is queued; in multiprocess mode drop this process's gauges (a
        stopped worker's circuit and lag no longer count; its counters still do)."""
        self._closed.set()
        self.drain()
        directory = multiprocess_dir()
        if directory is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


class MetricsSink:
    """The metrics of one workflow: a ``Sink`` (runs, approvals decided, model usage)
    and a ``StageObserver`` (each call's outcome and its stages' times)."""

    def __init__(self, metrics: Metrics, workflow: str, gateway: Gateway | None = None) -> None:
        self.m = metrics
        self.workflow = workflow
        self.tenant_label = metrics.tenant_label
        self._gateway = gateway
        # label children, cached: ``labels()`` costs ~1 µs, a cached child's update ~0.3
        self._calls: dict[tuple[str, ...], Any] = {}
        self._stages: dict[str, Any] = {}
        self._durations: dict[str, Any] = {}
        self._call_seconds: Any = None
        self._open_circuits: set[str] = set()

    # Sink ------------------------------------------------------------------------------

    def emit(
        self,
        run_id: str,
        tenant: str,
        kind: EventKind,
        payload: dict[str, Any],
        conn: Connection | None,
    ) -> None:
        if kind not in _SINK_KINDS:
            return
        m, wf = self.m, self.workflow
        if kind == "run_started":
            m.runs_started.labels(wf).inc()
        elif kind == "run_finished":
            m.runs_finished.labels(wf, payload["outcome"]).inc()
        elif kind == "approval_decided":
            m.approvals_decided.labels(wf, payload["decision"]).inc()
        elif kind == "approval_expired":
            m.approvals_decided.labels(wf, "expired").inc()
        elif kind == "approval_cancelled":
            m.approvals_decided.labels(wf, "cancelled").inc()
        elif kind == "usage":
            self._usage(tenant, payload)

    def _usage(self, tenant: str, payload: dict[str, Any]) -> None:
        m, wf = self.m, self.workflow
        t = (tenant,) if self.tenant_label else ()
        if payload.get("cost_usd") is not None:
            m.spend.labels(wf, "model", *t).inc(float(Decimal(payload["cost_usd"])))
        usage = payload.get("usage") or {}
        model = payload["model"]
        for direction in ("input", "output"):
            n = usage.get(f"{direction}_tokens")
            if n:
                m.tokens.labels(wf, model, direction).inc(n)

    # StageObserver ---------------------------------------------------------------------

    def call_done(
        self, call: Call, result: Result | None, marks: list[tuple[str | None, int]]
    ) -> None:
        queue = self.m.queue
        queue.append((self, call, result, marks))
        if len(queue) > _MAX_QUEUED:  # the counting thread fell behind: count here
            self.m.drain()

    def count(self, call: Call, result: Result | None, marks: list[tuple[str | None, int]]) -> None:
        """Count one call (``Metrics.drain``, off the call's path)."""
        m, wf, tool = self.m, self.workflow, call.tool_name
        decision = call.decision
        effect = decision.effect.value if decision is not None else "none"
        t = (call.run.tenant,) if self.tenant_label else ()
        kind: FailureKind | None = None
        match result:
            case Allowed():
                outcome = "executed"
            case Denied():
                outcome, kind = "denied", result.kind
                m.denials.labels(wf, tool, kind.value, *t).inc()
            case Failed():
                outcome, kind = "failed", result.kind
                m.failures.labels(wf, tool, kind.value, *t).inc()
                if kind in TOOL_ERRORS:
                    m.tool_errors.labels(wf, tool, kind.value, *t).inc()
            case Pending():
                outcome = "pending"
                m.approvals_requested.labels(wf, result.role, *t).inc()
            case Drafted():
                outcome = "drafted"
            case _:
                outcome = "error"
        key = (tool, effect, outcome, *t)
        child = self._calls.get(key)
        if child is None:
            child = self._calls[key] = m.calls.labels(wf, *key)
        child.inc()
        if call.cost is not None:
            m.spend.labels(wf, "tool", *t).inc(float(call.cost))
        if kind in TOOL_ERRORS or tool in self._open_circuits:
            self._circuit(call)
        seconds = (marks[-1][1] - marks[0][1]) / 1e9
        durations = self._durations.get(tool)
        if durations is None:
            durations = self._durations[tool] = m.tool_seconds.labels(wf, tool)
        durations.observe(seconds)
        if self._call_seconds is None:
            self._call_seconds = m.call_seconds.labels(wf)
        self._call_seconds.observe(seconds)
        stages = self._stages
        for stage, ns in exclusive_times(marks):
            hist = stages.get(stage)
            if hist is None:
                hist = stages[stage] = m.stage_seconds.labels(wf, stage)
            hist.observe(ns / 1e9)

    def _circuit(self, call: Call) -> None:
        gateway, tool = self._gateway, call.tool
        if gateway is None or tool is None or tool.kind == "model":
            return
        opened = gateway.svc.executor.breaker(call.run.tenant, tool).opened_at is not None
        if opened:
            self._open_circuits.add(tool.name)
        else:
            self._open_circuits.discard(tool.name)
        self.m.circuit_open.labels(self.workflow, tool.name).set(1 if opened else 0)

    def approval_waited(self, run: RunState, pending: Pending, start_ns: int, end_ns: int) -> None:
        self.m.approval_wait.labels(self.workflow, pending.role).observe((end_ns - start_ns) / 1e9)


#: calls queued before the call path counts them itself
_MAX_QUEUED = 20_000

_SINK_KINDS: frozenset[str] = frozenset(
    {
        "run_started",
        "run_finished",
        "approval_decided",
        "approval_expired",
        "approval_cancelled",
        "usage",
    }
)


class StoreCollector(Collector):
    """Gauges read from the store at scrape time: what every replica shares."""

    def __init__(
        self,
        store: Store,
        gateways: Iterable[Gateway],
        *,
        clock: Any = None,
    ) -> None:
        self.store = store
        self.gateways = list(gateways)
        self.clock = clock or (lambda: datetime.now(UTC))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock()
        pending = GaugeMetricFamily(
            "warden_approvals_pending", "Approvals waiting for a decision.",
            labels=("workflow", "role"),
        )  # fmt: skip
        oldest = GaugeMetricFamily(
            "warden_approvals_oldest_pending_age_seconds",
            "Age of the oldest approval waiting for a decision.",
            labels=("workflow",),
        )
        breached = GaugeMetricFamily(
            "warden_approvals_sla_breached",
            "Approvals still pending past their deadline (the sweeper has not applied the "
            "timeout fallback yet).",
            labels=("workflow",),
        )
        active = GaugeMetricFamily(
            "warden_switches_active", "Kill switches on, by scope.", labels=("scope",)
        )
        with self.store.read() as conn:
            rows = conn.execute(
                select(
                    approvals.c.workflow,
                    approvals.c.role,
                    func.count(),
                    func.min(approvals.c.created_at),
                    func.sum(case((approvals.c.deadline < now, 1), else_=0)),
                )
                .where(approvals.c.state == "pending")
                .group_by(approvals.c.workflow, approvals.c.role)
            ).all()
            by_wf: dict[str, tuple[datetime | None, int]] = {}
            for workflow, role, n, first, late in rows:
                pending.add_metric((workflow, role), n)
                seen_first, seen_late = by_wf.get(workflow, (None, 0))
                if seen_first is None or (first is not None and first < seen_first):
                    seen_first = first
                by_wf[workflow] = (seen_first, seen_late + int(late or 0))
            for workflow, (first, late) in by_wf.items():
                age = (now - _aware(first)).total_seconds() if first is not None else 0.0
                oldest.add_metric((workflow,), max(age, 0.0))
                breached.add_metric((workflow,), late)
            for scope, n in conn.execute(
                select(switches.c.scope, func.count())
                .where(switches.c.active.is_(True))
                .group_by(switches.c.scope)
            ):
                active.add_metric((scope,), n)
        yield pending
        yield oldest
        yield breached
        yield active
        yield from self._budgets()

    def _budgets(self) -> Iterator[GaugeMetricFamily]:
        """Budgets with one counter for the workflow (scope ``workflow`` or ``global``);
        per-tenant, agent or run counters are in ``warden costs``."""
        from warden.economics._budgets import targets_for

        spent = GaugeMetricFamily(
            "warden_budget_spent_usd", "Spent in the budget's current period (USD).",
            labels=("workflow", "budget"),
        )  # fmt: skip
        left = GaugeMetricFamily(
            "warden_budget_remaining_usd", "Left in the budget's current period (USD).",
            labels=("workflow", "budget"),
        )  # fmt: skip
        for gateway in self.gateways:
            models = gateway.svc.models
            if models is None:
                continue
            spec = gateway.svc.loaded.spec
            shared = [
                b
                for b in spec.budgets
                if getattr(b.scope, "value", b.scope) in ("workflow", "global")
            ]
            if not shared:
                continue
            targets = targets_for(shared, tenant="", workflow=spec.name, agent="", run_id="")
            for status in models.budgets.status(targets):
                spent.add_metric((spec.name, status.budget), float(status.spent_usd))
                if status.left_usd is not None:
                    left.add_metric((spec.name, status.budget), float(status.left_usd))
        yield spent
        yield left


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def scrape(metrics: Metrics | None, collector: Collector | None) -> tuple[bytes, str]:
    """The exposition of this process's metrics (every live worker's, in multiprocess
    mode) and of ``collector`` (the store's gauges): body and content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if metrics is not None:
        metrics.refresh()
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    if directory is not None:
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    elif metrics is not None:
        registry.register(_Of(metrics.registry))
    if collector is not None:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Of(Collector):
    """The metrics of another registry (this process's own, outside multiprocess mode)."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Any]:
        yield from self.inner.collect()
