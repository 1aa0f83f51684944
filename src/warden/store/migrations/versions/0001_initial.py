"""The initial schema: ledger, runs, approvals, switches, idempotency, windows, API keys,
rate counters, outbox and webhook deliveries.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 00:18:41

Stores created before Warden had migrations (by ``metadata.create_all``) have these tables
but no ``alembic_version``. ``warden.store._migrate`` runs this revision on them with
``config.attributes["warden_adopt"]`` set: tables and indexes that exist are kept, the
nullable columns added since are added, and anything else missing is created. A table that
lacks a NOT NULL column cannot be adopted and stops the upgrade.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.schema import SchemaItem

from warden.errors import StoreError

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Auto-increment ids: BIGSERIAL on PostgreSQL, INTEGER PRIMARY KEY (the rowid) on SQLite.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# UTC times as fixed-width ISO-8601 text (warden.store._tables.UTCDateTime).
_UTC = 27


def upgrade() -> None:
    _create_table(
        "ledger_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(80), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(120), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=True),
        sa.Column("ts", sa.String(27), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stream", "seq", name="uq_ledger_stream_seq"),
    )
    _create_index("ix_ledger_tenant_ts", "ledger_events", ["tenant", "ts"])

    _create_table(
        "ledger_heads",
        sa.Column("stream", sa.String(80), nullable=False),
        sa.Column("tenant", sa.String(120), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("stream"),
    )

    _create_table(
        "runs",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(120), nullable=False),
        sa.Column("workflow", sa.String(120), nullable=False),
        sa.Column("workflow_version", sa.String(40), nullable=False),
        sa.Column("spec_fingerprint", sa.String(64), nullable=False),
        sa.Column("agent", sa.String(120), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("task_type", sa.String(120), nullable=True),
        sa.Column("end_user", sa.String(200), nullable=True),
        sa.Column("opened_by", sa.String(120), nullable=True),
        sa.Column("tier", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=True),
        sa.Column("started_at", sa.String(_UTC), nullable=False),
        sa.Column("finished_at", sa.String(_UTC), nullable=True),
        sa.Column("state", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id"),
    )
    _create_index("ix_runs_tenant_started", "runs", ["tenant", "started_at"])

    _create_table(
        "approvals",
        sa.Column("approval_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(120), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("action_id", sa.String(40), nullable=False),
        sa.Column("workflow", sa.String(120), nullable=False),
        sa.Column("tool", sa.String(120), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("role", sa.String(120), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(120), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", sa.String(_UTC), nullable=False),
        sa.Column("deadline", sa.String(_UTC), nullable=False),
        sa.Column("decided_by", sa.String(120), nullable=True),
        sa.Column("decided_at", sa.String(_UTC), nullable=True),
        sa.Column("rationale", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("approval_id"),
    )
    _create_index("ix_approvals_state_deadline", "approvals", ["state", "deadline"])
    _create_index("ix_approvals_tenant_state", "approvals", ["tenant", "state"])

    _create_table(
        "switches",
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("target", sa.String(120), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("set_by", sa.String(120), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("set_at", sa.String(_UTC), nullable=False),
        sa.PrimaryKeyConstraint("scope", "target"),
    )

    _create_table(
        "idempotency",
        sa.Column("tenant", sa.String(120), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("action_id", sa.String(40), nullable=False),
        sa.Column("tool", sa.String(120), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("created_at", sa.String(_UTC), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "key"),
    )

    _create_table(
        "window_entries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(120), nullable=False),
        sa.Column("window_name", sa.String(120), nullable=False),
        sa.Column("group_key", sa.String(200), nullable=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("action_id", sa.String(40), nullable=False),
        sa.Column("void", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _create_index(
        "ix_window_lookup", "window_entries", ["tenant", "window_name", "group_key", "ts_us"]
    )
    _create_index("ix_window_action", "window_entries", ["action_id"])

    _create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("tenant", sa.String(120), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(_UTC), nullable=False),
        sa.Column("created_by", sa.String(120), nullable=False),
        sa.Column("expires_at", sa.String(_UTC), nullable=True),
        sa.Column("revoked_at", sa.String(_UTC), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )

    _create_table(
        "rate_counters",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "window_start"),
    )

    _create_table(
        "outbox",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(120), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.String(_UTC), nullable=False),
        sa.Column("lease_until", sa.String(_UTC), nullable=True),
        sa.Column("created_at", sa.String(_UTC), nullable=False),
        sa.Column("delivered_at", sa.String(_UTC), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    _create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])

    _create_table(
        "webhook_deliveries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("at", sa.String(_UTC), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _create_index("ix_deliveries_outbox", "webhook_deliveries", ["outbox_id"])


def downgrade() -> None:
    for name in (
        "webhook_deliveries",
        "outbox",
        "rate_counters",
        "api_keys",
        "window_entries",
        "idempotency",
        "switches",
        "approvals",
        "runs",
        "ledger_heads",
        "ledger_events",
    ):
        op.drop_table(name)


def _adopting() -> bool:
    return bool(context.config.attributes.get("warden_adopt", False))


def _create_table(name: str, *elements: SchemaItem) -> None:
    if _adopting():
        inspector = sa.inspect(op.get_bind())
        if inspector.has_table(name):
            have = {c["name"] for c in inspector.get_columns(name)}
            for column in elements:
                if not isinstance(column, sa.Column) or column.name in have:
                    continue
                if not column.nullable:
                    raise StoreError(
                        f"cannot adopt the existing table {name!r}: it lacks the NOT NULL "
                        f"column {column.name!r}"
                    )
                op.add_column(name, column)
            return
    op.create_table(name, *elements)


def _create_index(name: str, table: str, columns: list[str]) -> None:
    if _adopting():
        inspector = sa.inspect(op.get_bind())
        if any(ix["name"] == name for ix in inspector.get_indexes(table)):
            return
    op.create_index(name, table, columns, unique=False)
