"""Server configuration: flags of ``warden serve``, or ``WARDEN_*`` environment variables.

Worker processes started by uvicorn read the same variables, so every worker serves the
same configuration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from warden.store._retention import RetentionSettings


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WARDEN_", extra="ignore")

    store: str = "sqlite:///.warden/warden.db"
    #: workflow spec files; empty serves the refund-triage demo workflow
    specs: list[str] = Field(default_factory=list)
    #: tool factories ``module:function`` or ``path.py:function``, one per spec, same order
    tools: list[str] = Field(default_factory=list)
    #: largest request body accepted, in bytes
    max_body_bytes: int = 1_048_576
    #: a request's body must have fully arrived this many seconds after its headers,
    #: else 408 (a slow client holds a connection and a task no longer than this; 0: off)
    body_timeout_s: float = Field(default=30.0, ge=0)
    #: a request's headers must have fully arrived this many seconds after the connection
    #: opened or the previous request ended, else the connection is closed (``warden serve``)
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: threads per process that run request handlers' store work off the event loop (on
    #: PostgreSQL each may hold a connection). Measured (benchmarks/RESULTS.md, notes of
    #: 2026-11-30, --workers 2, C=16): 1 thread served 861 calls/s on SQLite (p99 120 ms)
    #: and 968/s on PostgreSQL (p99 45 ms), 16 threads 730/s (p99 416 ms) and 642/s: the
    #: threads contend for SQLite's one write lock and for the GIL. Raise it when handlers'
    #: queries are slow, not for throughput.
    store_threads: int = Field(default=1, ge=1, le=256)
    #: requests per second per API key, decided in the store (0 disables)
    key_rate_limit: int = 0
    #: how long a verified key is trusted before it is looked up again (revocation delay)
    key_cache_s: float = 2.0
    #: how often each process re-reads kill switches
    switch_refresh_s: float = 0.25
    #: a replica (``GET /v1/replicas``) counts as live when its heartbeat is at most this
    #: many seconds old; switches list which live replicas have seen them
    replica_live_s: float = Field(default=10.0, gt=0)
    #: how often each process looks for approvals past their deadline
    sla_sweep_s: float = 1.0
    #: how often each process evaluates the time-based alerts (docs/slo-alerts.md)
    alert_interval_s: float = 15.0
    #: the Ed25519 key that signs ledger checkpoints (``warden ledger keygen``); also
    #: ``WARDEN_LEDGER_KEY``. Unset: the server takes no checkpoints
    ledger_key: str | None = None
    #: how often the server signs a checkpoint of the chain heads that moved
    checkpoint_s: float = Field(default=60.0, gt=0)
    #: append every checkpoint to this file too (what an outsider keeps), optional
    checkpoint_file: str | None = None
    #: a YAML/JSON file of webhook targets (url, secret, events), optional
    webhooks_file: str | None = None
    #: a YAML/JSON secrets file for ``file:`` secret references, optional
    secrets_file: str | None = None
    #: serve well-formed governed calls without FastAPI's routing (same answers, ~35% more
    #: calls/s; see server._fastpath); off: every request goes through the FastAPI routes
    fast_path: bool = True
    #: create or upgrade the schema at start-up (the embedded default); otherwise refuse
    #: to start on an out-of-date schema
    auto_migrate: bool = False
    #: serve Prometheus metrics at ``/metrics`` (docs/telemetry.md)
    metrics: bool = True
    #: label calls, denials, errors, approvals and spend with the tenant (many tenants:
    #: many series, hence off unless the operator asks)
    metrics_tenant_label: bool = False
    #: who may scrape ``/metrics``: ``loopback`` (clients on this host without a key,
    #: others with an admin or auditor key), ``key`` (an admin or auditor key always),
    #: ``open`` (anyone who can reach the port)
    metrics_access: Literal["loopback", "key", "open"] = "loopback"
    #: retention classes per tenant, the archive secret, and the cleanup of operational
    #: rows (``WARDEN_RETENTION`` as JSON; see docs/export-retention.md)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    #: signs the console's session cookies (``/ui``); every process of a deployment needs
    #: the same one. Unset: a random one per process (``warden serve`` makes one per start
    #: and hands it to its workers), so sign-ins end when the server restarts
    ui_secret: str | None = Field(default=None, min_length=16)
