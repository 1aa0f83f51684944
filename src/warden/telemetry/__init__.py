"""Telemetry: OpenTelemetry traces and Prometheus metrics of runs and governed calls
(see docs/telemetry.md). Sinks of the stages' events, plus a stage observer for the
pipeline's timings; nothing here runs when telemetry is off."""

from warden.telemetry._metrics import Metrics, MetricsSink, StoreCollector, scrape
from warden.telemetry._setup import (
    Telemetry,
    TraceContextMiddleware,
    instrument,
    traceparent,
)
from warden.telemetry._traces import (
    SpanBatcher,
    TraceSink,
    exporter_from_env,
    run_context,
    traces_from_env,
)

__all__ = [
    "Metrics",
    "MetricsSink",
    "SpanBatcher",
    "StoreCollector",
    "Telemetry",
    "TraceContextMiddleware",
    "TraceSink",
    "exporter_from_env",
    "instrument",
    "run_context",
    "scrape",
    "traceparent",
    "traces_from_env",
]
