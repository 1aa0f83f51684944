"""Turning telemetry on: for a gateway in process (``instrument``) or for every gateway
of a server process (``Telemetry.for_server``), and joining a caller's trace."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

from warden.pipeline._call import Call, RunState
from warden.pipeline._pipeline import StageObserver
from warden.results import Pending, Result
from warden.telemetry._metrics import Metrics, MetricsSink, StoreCollector, multiprocess_dir
from warden.telemetry._traces import SpanBatcher, TraceSink, traces_from_env

if TYPE_CHECKING:
    from warden.gateway import Gateway
    from warden.server._settings import ServerSettings
    from warden.store import Store

_PROPAGATOR = TraceContextTextMapPropagator()


class _Both:
    """Two observers as one (traces and metrics)."""

    def __init__(self, observers: Sequence[StageObserver]) -> None:
        self.observers = tuple(observers)

    def call_done(
        self, call: Call, result: Result | None, marks: list[tuple[str | None, int]]
    ) -> None:
        for observer in self.observers:
            observer.call_done(call, result, marks)

    def approval_waited(self, run: RunState, pending: Pending, start_ns: int, end_ns: int) -> None:
        for observer in self.observers:
            observer.approval_waited(run, pending, start_ns, end_ns)


@dataclass
class Telemetry:
    """What one process exports: spans (``traces``: a ``SpanBatcher``, None: off) and
    Prometheus metrics (``metrics``, None: off)."""

    traces: SpanBatcher | None = None
    metrics: Metrics | None = None
    #: the gateways instrumented so far (the store's gauges cover their workflows)
    gateways: list[Gateway] = field(default_factory=list)

    @classmethod
    def for_server(cls, settings: ServerSettings) -> Telemetry:
        """Traces as the ``OTEL_*`` variables say (off unless they name an exporter or an
        endpoint), metrics as the server's settings say (on by default)."""
        metrics = Metrics(tenant_label=settings.metrics_tenant_label) if settings.metrics else None
        if metrics is not None and multiprocess_dir() is not None:
            # another worker may answer the scrape: count this one's calls as they come
            metrics.start()
        return cls(traces=traces_from_env(), metrics=metrics)

    def instrument(self, gateway: Gateway) -> None:
        """Hand ``gateway``'s events and its calls' stage times to the traces and metrics
        that are on (nothing, and no cost, when both are off)."""
        workflow = gateway.spec.spec.name
        parts: list[TraceSink | MetricsSink] = []
        if self.traces is not None:
            parts.append(TraceSink(self.traces, workflow))
        if self.metrics is not None:
            parts.append(self.metrics.sink(workflow, gateway))
        if not parts:
            return
        self.gateways.append(gateway)
        gateway.svc.sinks.extend(parts)
        observers: list[StageObserver] = list(parts)
        if gateway.pipeline.observer is not None:  # instrumented before: keep that too
            observers.insert(0, gateway.pipeline.observer)
        gateway.pipeline.observe(observers[0] if len(observers) == 1 else _Both(observers))

    def collector(self, store: Store) -> StoreCollector | None:
        """The store's gauges of the instrumented gateways' workflows (None: metrics off)."""
        if self.metrics is None:
            return None
        return StoreCollector(store, self.gateways)

    def close(self) -> None:
        """Export the spans still waiting; stop the metrics' refresher."""
        if self.traces is not None:
            self.traces.shutdown()
        if self.metrics is not None:
            self.metrics.close()


def instrument(
    gateway: Gateway, *, traces: SpanBatcher | None = None, metrics: Metrics | None = None
) -> Telemetry:
    """Telemetry for one in-process gateway: its runs' and calls' spans to ``traces``,
    its metrics to ``metrics``. Returns what was installed (``close()`` it at exit)."""
    telemetry = Telemetry(traces=traces, metrics=metrics)
    telemetry.instrument(gateway)
    if metrics is not None:  # whoever reads ``metrics.registry`` sees counts within 0.5 s
        metrics.start()
    return telemetry


@contextmanager
def traceparent(header: str | None, tracestate: str | None = None) -> Iterator[None]:
    """Run the block in the trace a W3C ``traceparent`` names (e.g. one an agent in
    another process sent): the runs and calls made in it join that trace. ``None`` or a
    malformed header: the block runs as it would have."""
    if not header:
        yield
        return
    carrier = {"traceparent": header}
    if tracestate:
        carrier["tracestate"] = tracestate
    token = otel_context.attach(_PROPAGATOR.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


class TraceContextMiddleware:
    """Each HTTP request runs in the trace its ``traceparent`` header names, so the
    governed calls it makes are children of the agent's span. Installed only when
    tracing is on; a request without the header costs a scan of its header names."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = state = None
        for name, value in scope.get("headers", ()):
            if name == b"traceparent":
                header = value.decode("latin-1")
            elif name == b"tracestate":
                state = value.decode("latin-1")
        if header is None:
            await self.app(scope, receive, send)
            return
        with traceparent(header, state):
            await self.app(scope, receive, send)
