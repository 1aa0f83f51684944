"""Ledger events as OpenTelemetry log records, exported over OTLP/HTTP.

A sink (``pipeline._sinks.Sink``): every event the stages emit for the ledger is also one
log record — ``event_name`` ``warden.<kind>``, the payload as the body (its plain-JSON
form, as the ledger stores it), and ``warden.run_id``, ``warden.tenant``,
``warden.workflow`` and ``warden.event`` as attributes — queued to a batch processor, so
the governed call never waits for the collector. Each replica exports the events it
handles (no duplicates across replicas); the ledger stays the record of truth, and the
cursor export (``GET /v1/ledger/export?after=``) is what fills a gap after an outage of the
collector (records dropped when the batch queue is full are counted by the SDK, never
retried).

Off unless configured by the standard variables: ``OTEL_LOGS_EXPORTER=otlp``, or an
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` without
``OTEL_LOGS_EXPORTER=none``; ``OTEL_SDK_DISABLED=true`` turns it off. The exporter reads
the endpoint, headers, timeout and compression variables itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from warden.errors import UsageError
from warden.ledger._canonical import to_jsonable

# Outcomes a SIEM rule most often keys on: a refusal or a failure is a warning.
_WARN = frozenset({"denied", "failed", "unrecordable", "budget_exceeded"})


def otlp_logs_enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_LOGS_EXPORTER", "").split(",") if e.strip()}
    if exporters:
        if exporters - {"otlp", "none"}:
            raise UsageError(
                f"OTEL_LOGS_EXPORTER={env['OTEL_LOGS_EXPORTER']}: Warden exports logs with "
                "otlp (OTLP/HTTP) only; set otlp or none"
            )
        return "otlp" in exporters
    return bool(
        env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


class OtlpLogSink:
    """Hands each event to an OpenTelemetry ``Logger`` backed by a batch processor."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider
        self._logger = provider.get_logger("warden.ledger")
        from opentelemetry._logs import SeverityNumber

        self._info, self._warn = SeverityNumber.INFO, SeverityNumber.WARN

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OtlpLogSink | None:
        """The sink the ``OTEL_*`` variables ask for, or None when logs export is off."""
        if not otlp_logs_enabled(environ):
            return None
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "warden"}))
        provider = LoggerProvider(resource=resource)
        provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
        return cls(provider)

    def emit(
        self,
        run_id: str,
        tenant: str,
        kind: str,
        payload: dict[str, Any],
        conn: Connection | None,
    ) -> None:
        body = to_jsonable(payload)
        attributes: dict[str, str] = {
            "warden.event": kind,
            "warden.run_id": run_id,
            "warden.tenant": tenant,
        }
        workflow = body.get("workflow") if isinstance(body, dict) else None
        if isinstance(workflow, str):
            attributes["warden.workflow"] = workflow
        warn = kind in _WARN
        self._logger.emit(
            event_name=f"warden.{kind}",
            severity_number=self._warn if warn else self._info,
            severity_text="WARN" if warn else "INFO",
            body=body,
            attributes=attributes,
        )

    def flush(self, timeout_ms: int = 10_000) -> bool:
        return bool(self._provider.force_flush(timeout_ms))

    def close(self) -> None:
        """Export what is queued, then stop (at server shutdown)."""
        self._provider.shutdown()
