"""SLO rollups and alert state (warden.telemetry).

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-02 17:30:00

``slo_rollups``: counters per workflow, tenant, task type, hour, metric and label, written
by upsert; ``alert_state``: one row per alert and subject (firing or resolved), changed
conditionally so replicas announce each change once; ``alert_hits``: occurrences counted
by windowed alerts.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "slo_rollups" not in existing:
        op.create_table(
            "slo_rollups",
            sa.Column("workflow", sa.String(120), primary_key=True),
            sa.Column("tenant", sa.String(120), primary_key=True),
            sa.Column("task_type", sa.String(120), primary_key=True),
            sa.Column("bucket", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("metric", sa.String(40), primary_key=True),
            sa.Column("label", sa.String(200), primary_key=True),
            sa.Column("value", sa.BigInteger, nullable=False),
        )
        op.create_index("ix_slo_rollups_bucket", "slo_rollups", ["bucket"])
        op.create_index("ix_slo_rollups_tenant_bucket", "slo_rollups", ["tenant", "bucket"])
    if "alert_state" not in existing:
        op.create_table(
            "alert_state",
            sa.Column("alert_key", sa.String(600), primary_key=True),
            sa.Column("workflow", sa.String(120), nullable=False),
            sa.Column("name", sa.String(120), nullable=False),
            sa.Column("kind", sa.String(40), nullable=False),
            sa.Column("tenant", sa.String(120), nullable=False),
            sa.Column("subject", sa.String(300), nullable=False),
            sa.Column("state", sa.String(12), nullable=False),
            sa.Column("fired_at", sa.String(27), nullable=False),
            sa.Column("resolved_at", sa.String(27), nullable=True),
            sa.Column("times_fired", sa.Integer, nullable=False),
            sa.Column("detail", sa.Text, nullable=False),
        )
        op.create_index("ix_alert_state_state", "alert_state", ["state", "kind"])
    if "alert_hits" not in existing:
        op.create_table(
            "alert_hits",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("hit_key", sa.String(600), nullable=False),
            sa.Column("ts_us", sa.BigInteger, nullable=False),
        )
        op.create_index("ix_alert_hits_key_ts", "alert_hits", ["hit_key", "ts_us"])


def downgrade() -> None:
    op.drop_index("ix_alert_hits_key_ts", table_name="alert_hits")
    op.drop_table("alert_hits")
    op.drop_index("ix_alert_state_state", table_name="alert_state")
    op.drop_table("alert_state")
    op.drop_index("ix_slo_rollups_tenant_bucket", table_name="slo_rollups")
    op.drop_index("ix_slo_rollups_bucket", table_name="slo_rollups")
    op.drop_table("slo_rollups")
