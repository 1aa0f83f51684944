"""Telemetry: sinks of the governed call's events and what is built on them.

- OpenTelemetry traces and Prometheus metrics of runs and governed calls, plus a stage
  observer for the pipeline's timings (docs/telemetry.md); nothing runs when they are off.
- ``Rollups`` counts what every call did per workflow, tenant, task type and hour;
  ``slo_report`` measures the spec's ``slo:`` targets from them over 1 h, 7 d and 30 d,
  with drift; ``Alerts`` evaluates the spec's ``alerts:`` (docs/slo-alerts.md).
- PII redaction and the vault (docs/pii.md): ``PiiRedactor`` tokenizes personal data in
  every event before the sinks see it; ``Vault`` holds tenant keys, sealed raw values and
  the record of their reads, and shreds a tenant's key.
"""

from warden.telemetry._alerts import Alerts, list_alerts
from warden.telemetry._detect import KINDS as PII_KINDS
from warden.telemetry._detect import PiiKind
from warden.telemetry._detect import find as find_pii
from warden.telemetry._metrics import Metrics, MetricsSink, StoreCollector, scrape
from warden.telemetry._redact import PiiRedactor, is_token, pii_redactor
from warden.telemetry._rollups import Rollups, bucket_of, rebuild, upper_ms
from warden.telemetry._setup import (
    Telemetry,
    TraceContextMiddleware,
    instrument,
    traceparent,
)
from warden.telemetry._slo import WINDOWS, Breach, SloFigures, SloGroup, SloReport, slo_report
from warden.telemetry._traces import (
    SpanBatcher,
    TraceSink,
    exporter_from_env,
    run_context,
    traces_from_env,
)
from warden.telemetry._vault import Vault, VaultError, VaultRead, master_key, new_master_key

__all__ = [
    "PII_KINDS",
    "WINDOWS",
    "Alerts",
    "Breach",
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
