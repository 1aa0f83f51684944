"""Telemetry sinks fed by the governed call's events: SLO rollups, live SLOs and alerts.

``Rollups`` counts what every call did per workflow, tenant, task type and hour;
``slo_report`` measures the spec's ``slo:`` targets from them over 1 h, 7 d and 30 d, with
drift; ``Alerts`` evaluates the spec's ``alerts:`` (docs/slo-alerts.md).
"""

from warden.telemetry._alerts import Alerts, list_alerts
from warden.telemetry._rollups import Rollups, bucket_of, rebuild, upper_ms
from warden.telemetry._slo import WINDOWS, Breach, SloFigures, SloGroup, SloReport, slo_report

__all__ = [
    "WINDOWS",
    "Alerts",
    "Breach",
    "Rollups",
    "SloFigures",
    "SloGroup",
    "SloReport",
    "bucket_of",
    "list_alerts",
    "rebuild",
    "slo_report",
    "upper_ms",
]
