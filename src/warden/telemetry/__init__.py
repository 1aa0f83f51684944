"""Telemetry: sinks of the governed call's events and what is built on them.

- OpenTelemetry traces and Prometheus metrics of runs and governed calls, plus a stage
  observer for the pipeline's timings (docs/telemetry.md); nothing runs when they are off.
- ``Rollups`` counts what every call did per workflow, tenant, task type and hour;
  ``slo_report`` measures the spec's ``slo:`` targets from them over 1 h, 7 d and 30 d,
  with drift; ``dashboard`` the console's dashboards; ``Alerts`` evaluates the spec's
  ``alerts:`` (docs/slo-alerts.md).
- PII redaction and the vault (docs/pii.md): ``PiiRedactor`` tokenizes personal data in
  every event before the sinks see it; ``Vault`` holds tenant keys, sealed raw values and
  the record of their reads, and shreds a tenant's key.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from warden.telemetry._alerts import Alerts, list_alerts
    from warden.telemetry._dashboard import Dashboard, dashboard
    from warden.telemetry._detect import KINDS as PII_KINDS
    from warden.telemetry._detect import PiiKind
    from warden.telemetry._detect import find as find_pii
    from warden.telemetry._metrics import Metrics, MetricsSink, StoreCollector, scrape
    from warden.telemetry._redact import PiiRedactor, is_token, pii_redactor
    from warden.telemetry._rollups import Rollups, bucket_of, rebuild, upper_ms
    from warden.telemetry._setup import Telemetry, TraceContextMiddleware, instrument, traceparent
    from warden.telemetry._slo import WINDOWS, Breach, SloFigures, SloGroup, SloReport, slo_report
    from warden.telemetry._traces import (
        SpanBatcher,
        TraceSink,
        exporter_from_env,
        run_context,
        traces_from_env,
    )
    from warden.telemetry._vault import Vault, VaultError, VaultRead, master_key, new_master_key

# Imported on first use (PEP 562): the core imports the vault and the redactor from here,
# and the trace and metric modules import the pipeline, so loading everything eagerly
# would be circular (and would load OpenTelemetry and prometheus-client for every user of
# ``warden``, whether telemetry is on or not).
_LAZY: dict[str, tuple[str, str]] = {
    "PII_KINDS": ("warden.telemetry._detect", "KINDS"),
    "WINDOWS": ("warden.telemetry._slo", "WINDOWS"),
    "Alerts": ("warden.telemetry._alerts", "Alerts"),
    "Breach": ("warden.telemetry._slo", "Breach"),
    "Dashboard": ("warden.telemetry._dashboard", "Dashboard"),
    "Metrics": ("warden.telemetry._metrics", "Metrics"),
    "MetricsSink": ("warden.telemetry._metrics", "MetricsSink"),
    "PiiKind": ("warden.telemetry._detect", "PiiKind"),
    "PiiRedactor": ("warden.telemetry._redact", "PiiRedactor"),
    "Rollups": ("warden.telemetry._rollups", "Rollups"),
    "SloFigures": ("warden.telemetry._slo", "SloFigures"),
    "SloGroup": ("warden.telemetry._slo", "SloGroup"),
    "SloReport": ("warden.telemetry._slo", "SloReport"),
    "SpanBatcher": ("warden.telemetry._traces", "SpanBatcher"),
    "StoreCollector": ("warden.telemetry._metrics", "StoreCollector"),
    "Telemetry": ("warden.telemetry._setup", "Telemetry"),
    "TraceContextMiddleware": ("warden.telemetry._setup", "TraceContextMiddleware"),
    "TraceSink": ("warden.telemetry._traces", "TraceSink"),
    "Vault": ("warden.telemetry._vault", "Vault"),
    "VaultError": ("warden.telemetry._vault", "VaultError"),
    "VaultRead": ("warden.telemetry._vault", "VaultRead"),
    "bucket_of": ("warden.telemetry._rollups", "bucket_of"),
    "dashboard": ("warden.telemetry._dashboard", "dashboard"),
    "exporter_from_env": ("warden.telemetry._traces", "exporter_from_env"),
    "find_pii": ("warden.telemetry._detect", "find"),
    "instrument": ("warden.telemetry._setup", "instrument"),
    "is_token": ("warden.telemetry._redact", "is_token"),
    "list_alerts": ("warden.telemetry._alerts", "list_alerts"),
    "master_key": ("warden.telemetry._vault", "master_key"),
    "new_master_key": ("warden.telemetry._vault", "new_master_key"),
    "pii_redactor": ("warden.telemetry._redact", "pii_redactor"),
    "rebuild": ("warden.telemetry._rollups", "rebuild"),
    "run_context": ("warden.telemetry._traces", "run_context"),
    "scrape": ("warden.telemetry._metrics", "scrape"),
    "slo_report": ("warden.telemetry._slo", "slo_report"),
    "traceparent": ("warden.telemetry._setup", "traceparent"),
    "traces_from_env": ("warden.telemetry._traces", "traces_from_env"),
    "upper_ms": ("warden.telemetry._rollups", "upper_ms"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


__all__ = [
    "PII_KINDS",
    "WINDOWS",
    "Alerts",
    "Breach",
    "Dashboard",
    "Metrics",
    "MetricsSink",
    "PiiKind",
    "PiiRedactor",
    "Rollups",
    "SloFigures",
    "SloGroup",
    "SloReport",
    "SpanBatcher",
    "StoreCollector",
    "Telemetry",
    "TraceContextMiddleware",
    "TraceSink",
    "Vault",
    "VaultError",
    "VaultRead",
    "bucket_of",
    "dashboard",
    "exporter_from_env",
    "find_pii",
    "instrument",
    "is_token",
    "list_alerts",
    "master_key",
    "new_master_key",
    "pii_redactor",
    "rebuild",
    "run_context",
    "scrape",
    "slo_report",
    "traceparent",
    "traces_from_env",
    "upper_ms",
]
