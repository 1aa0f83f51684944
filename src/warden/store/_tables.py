"""The tables every Warden process shares.

Written on SQLAlchemy Core (no ORM) so the same statements run on SQLite and PostgreSQL.
Times are stored as fixed-width ISO-8601 UTC text (see ``UTCDateTime``) so that they compare
correctly as strings on both backends; window entries use integer epoch microseconds because
they are summed and range-scanned on the hot path.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)

_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_text(value: datetime) -> str:
    """Fixed-width UTC text for a timezone-aware datetime."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: Warden stores only timezone-aware UTC times")
    return value.astimezone(UTC).strftime(_FMT)


def parse_utc_text(value: str) -> datetime:
    return datetime.strptime(value, _FMT).replace(tzinfo=UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime stored as sortable text on every backend."""

    impl = String(27)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        return None if value is None else utc_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else parse_utc_text(value)


metadata = MetaData()

ledger_events = Table(
    "ledger_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("stream", String(80), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("tenant", String(120), nullable=False),
    Column("run_id", String(40), nullable=True),
    Column("ts", String(27), nullable=False),
    Column("type", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("stream", "seq", name="uq_ledger_stream_seq"),
    Index("ix_ledger_tenant_ts", "tenant", "ts"),
)

# The last (seq, hash) of each stream. Appends lock this row, so concurrent writers in
# different processes chain onto each other instead of forking the chain, and `verify`
# compares it with the events to detect a truncated tail.
ledger_heads = Table(
    "ledger_heads",
    metadata,
    Column("stream", String(80), primary_key=True),
    Column("tenant", String(120), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
    # The seq up to which a signed checkpoint covers the stream (migration 0004): the next
    # checkpoint signs only the heads that moved past it.
    Column("checkpointed_seq", Integer, nullable=False, server_default="0"),
)

# Signed checkpoints of the stream heads (warden.ledger._checkpoint), numbered and chained
# by the hash of the previous body; ``body`` is the exact text that was signed.
ledger_checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("n", Integer, primary_key=True, autoincrement=False),
    Column("created_at", String(27), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("body", Text, nullable=False),
    Column("signature", String(128), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("tenant", String(120), nullable=False),
    Column("workflow", String(120), nullable=False),
    Column("workflow_version", String(40), nullable=False),
    Column("spec_fingerprint", String(64), nullable=False),
    Column("agent", String(120), nullable=False),
    Column("task", Text, nullable=False),
    Column("task_type", String(120), nullable=True),
    Column("end_user", String(200), nullable=True),
    Column("opened_by", String(120), nullable=True),
    Column("tier", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("outcome", String(40), nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    # The run's counters (steps, repeats, provenance) when runs are served over HTTP, where
    # consecutive calls of one run may reach different replicas.
    Column("state", Text, nullable=True),
    # Taken atomically by each governed call over HTTP: action ids <run>.<step> are unique
    # across replicas. state_version counts writes of ``state`` (see gateway.Run.save).
    Column("steps", Integer, nullable=False, server_default="0"),
    Column("state_version", Integer, nullable=False, server_default="0"),
    Index("ix_runs_tenant_started", "tenant", "started_at"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("approval_id", String(40), primary_key=True),
    Column("tenant", String(120), nullable=False),
    Column("run_id", String(40), nullable=False),
    Column("action_id", String(40), nullable=False),
    Column("workflow", String(120), nullable=False),
    Column("tool", String(120), nullable=False),
    Column("args", Text, nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("reasons", Text, nullable=False),
    Column("rules", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("risk", Float, nullable=False),
    Column("role", String(120), nullable=False),
    Column("escalation_level", Integer, nullable=False, default=0),
    # The rule's SLA class (escalation.sla_classes); NULL: the workflow's default SLA.
    Column("sla_class", String(120), nullable=True),
    Column("requested_by", String(120), nullable=False),
    Column("state", String(20), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("deadline", UTCDateTime(), nullable=False),
    Column("decided_by", String(120), nullable=True),
    Column("decided_at", UTCDateTime(), nullable=True),
    Column("rationale", Text, nullable=True),
    Column("result", Text, nullable=True),
    Index("ix_approvals_state_deadline", "state", "deadline"),
    Index("ix_approvals_tenant_state", "tenant", "state"),
)

switches = Table(
    "switches",
    metadata,
    Column("scope", String(20), primary_key=True),
    Column("target", String(120), primary_key=True),
    Column("active", Boolean, nullable=False),
    Column("set_by", String(120), nullable=False),
    Column("reason", Text, nullable=False),
    Column("set_at", UTCDateTime(), nullable=False),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("tenant", String(120), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("run_id", String(40), nullable=False),
    Column("action_id", String(40), nullable=False),
    Column("tool", String(120), nullable=False),
    Column("state", String(12), nullable=False),  # started | done | unknown
    Column("result", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    # SHA-256 of (workflow, tool, canonical args): a key is bound to the call it was
    # first used for; another call with the same key is a conflict, never a replay.
    Column("fingerprint", String(64), nullable=True),
)

# Held from a call's fact lookups through its side effect, for tools declared with
# ``serialize_on`` (SQLite only: PostgreSQL uses advisory locks). See pipeline._locks.
resource_locks = Table(
    "resource_locks",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("holder", String(60), nullable=False),
    Column("expires_at", Float, nullable=False),
)

window_entries = Table(
    "window_entries",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant", String(120), nullable=False),
    Column("window_name", String(120), nullable=False),
    Column("group_key", String(200), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("value", Float, nullable=False),
    #: for ``count_distinct``: the SHA-256 of the counted value's canonical JSON
    Column("item", String(64), nullable=True),
    Column("action_id", String(40), nullable=False),
    Column("void", Boolean, nullable=False, default=False),
    Index("ix_window_lookup", "tenant", "window_name", "group_key", "ts_us"),
    Index("ix_window_action", "action_id"),
)


api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(120), nullable=False),
    Column("role", String(20), nullable=False),  # admin | approver | agent | auditor
    Column("tenant", String(120), nullable=False),  # a tenant, or "*" (admins only)
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    # What the key acts as (migration 0005; NULL on older keys, which fail closed): an agent
    # key's agent and the workflows it may run (JSON list; NULL: any), the approval roles an
    # approver or admin key decides for (JSON list), and whether it is a bridge that decides
    # on behalf of named people.
    Column("agent", String(120), nullable=True),
    Column("workflows", Text, nullable=True),
    Column("approval_roles", Text, nullable=True),
    Column("bridge", Boolean, nullable=False, server_default=false()),
)

# Fixed-window request counters, incremented atomically in the store so that a key's rate
# limit holds across replicas.
rate_counters = Table(
    "rate_counters",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
)

# Notifications to deliver (transactional outbox): written in the same transaction as the
# event they announce, delivered by whichever replica leases them first.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant", String(120), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(12), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_outbox_due", "state", "next_attempt_at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, nullable=False),
    Column("url", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Index("ix_deliveries_outbox", "outbox_id"),
)

# Budgets (warden.economics._budgets). Money is integer nano-dollars (1e-9 USD): exact on
# both backends (SQLite has no exact decimal type), fine enough that rounding each call up
# to the next nano-dollar is invisible, and a BIGINT holds $9.2 billion per counter.
#
# Settled spend per budget counter and time bucket: the bucket is 0 for a run budget, the
# period's start for a calendar one, and a 1/24-period slice for a rolling one (epoch
# seconds). A settle adds to the bucket its reservation was made in.
budget_spend = Table(
    "budget_spend",
    metadata,
    Column("budget_key", String(600), primary_key=True),
    Column("bucket", BigInteger, primary_key=True, autoincrement=False),
    Column("spent_nusd", BigInteger, nullable=False),
    Column("spent_tokens", BigInteger, nullable=False),
)

# Money held for calls in flight: one row per reservation and budget counter. A settle or a
# release deletes its rows; a row past ``expires_us`` (its caller crashed) stops counting at
# once and is deleted by a later sweep.
budget_holds = Table(
    "budget_holds",
    metadata,
    Column("reservation_id", String(40), primary_key=True),
    Column("budget_key", String(600), primary_key=True),
    Column("bucket", BigInteger, nullable=False),
    Column("nusd", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Index("ix_budget_holds_key", "budget_key", "expires_us"),
)

# Model replies kept for exact repeats of cacheable requests (a model's ``cache:``), per
# tenant: the key is the SHA-256 of the tenant, the model and the canonical request, and the
# tenant is part of the primary key too, so no lookup can cross tenants.
model_cache = Table(
    "model_cache",
    metadata,
    Column("tenant", String(120), primary_key=True),
    Column("cache_key", String(64), primary_key=True),
    Column("model", String(120), nullable=False),
    # the reply as the agent got it (JSON: body, text, usage, the cost it had)
    Column("reply", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Index("ix_model_cache_expires", "expires_us"),
)

# SLO rollups (warden.telemetry): counters per workflow, tenant, task type ('' for none) and
# the hour the run started (epoch seconds), one row per figure (``metric``) and its label (a
# rule, a tool, a latency bucket; '' for none). Written by upsert (value += delta) in batches;
# read by summing a window's rows, whose number depends on hours and groups, not on events.
slo_rollups = Table(
    "slo_rollups",
    metadata,
    Column("workflow", String(120), primary_key=True),
    Column("tenant", String(120), primary_key=True),
    Column("task_type", String(120), primary_key=True),
    Column("bucket", BigInteger, primary_key=True, autoincrement=False),
    Column("metric", String(40), primary_key=True),
    Column("label", String(200), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Index("ix_slo_rollups_bucket", "bucket"),
    Index("ix_slo_rollups_tenant_bucket", "tenant", "bucket"),
)

# Alerts (warden.telemetry): one row per alert and subject, ``firing`` or ``resolved``. A
# replica fires or resolves one by a conditional change of ``state`` (an insert that finds
# no row, or an update from the other state), so replicas never both announce it.
alert_state = Table(
    "alert_state",
    metadata,
    Column("alert_key", String(600), primary_key=True),
    Column("workflow", String(120), nullable=False),
    Column("name", String(120), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("tenant", String(120), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("state", String(12), nullable=False),
    Column("fired_at", UTCDateTime(), nullable=False),
    Column("resolved_at", UTCDateTime(), nullable=True),
    Column("times_fired", Integer, nullable=False),
    # what the last firing saw (JSON)
    Column("detail", Text, nullable=False),
    Index("ix_alert_state_state", "state", "kind"),
)

# The occurrences windowed alerts count ("5 tool failures in 10 minutes"), from every
# replica: one row each, pruned once older than the longest window.
alert_hits = Table(
    "alert_hits",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hit_key", String(600), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Index("ix_alert_hits_key_ts", "hit_key", "ts_us"),
)

# The vault (warden.telemetry._vault, migration 0010). One secret per tenant and generation,
# wrapped by the server's master key (which is never stored); NULL ``wrapped`` once
# shredded. A shred destroys every generation; the next use makes generation n+1.
vault_keys = Table(
    "vault_keys",
    metadata,
    Column("tenant", String(120), primary_key=True),
    Column("generation", Integer, primary_key=True, autoincrement=False),
    # names the master key that wrapped it (a SHA-256 prefix), not the key itself
    Column("key_id", String(16), nullable=False),
    Column("wrapped", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("shredded_at", UTCDateTime(), nullable=True),
    Column("shredded_by", String(120), nullable=True),
)

# Raw values of PII tokens, sealed with the tenant's key, where the spec keeps them
# (``pii.vault: true``); read only through Vault.reveal, which records the read.
vault_values = Table(
    "vault_values",
    metadata,
    Column("tenant", String(120), primary_key=True),
    Column("token", String(80), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("sealed", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Every read of a raw value: a token revealed, an approval's arguments shown to an approver.
vault_reads = Table(
    "vault_reads",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant", String(120), nullable=False),
    Column("ref", String(200), nullable=False),
    Column("reader", String(120), nullable=False),
    Column("role", String(20), nullable=False),
    Column("purpose", String(200), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Index("ix_vault_reads_tenant_at", "tenant", "at"),
)

# The replica registry (warden.pipeline._replicas, migration 0012): one row per registered
# process (a ``warden serve`` worker, or an SDK gateway that asks), upserted by its switch
# board's refresh thread at most once a second; ``switches_read_at`` is when that process
# last read the switch table (NULL before its first read). Rows unseen for an hour are
# pruned; a clean stop deletes its own row.
replicas = Table(
    "replicas",
    metadata,
    Column("replica_id", String(40), primary_key=True),
    Column("kind", String(12), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(40), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("switches_read_at", UTCDateTime(), nullable=True),
    Index("ix_replicas_last_seen_at", "last_seen_at"),
)
