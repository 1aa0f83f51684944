"""The replica registry (warden.pipeline._replicas).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 22:10:00

``replicas``: one row per process that registers (every ``warden serve`` worker; SDK
gateways that ask), written by its kill-switch board's refresh thread at most once a
second: who it is, when it was last seen and when it last read the switch table, so the
console can say which live replicas have seen a flipped switch.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "replicas" not in existing:
        op.create_table(
            "replicas",
            sa.Column("replica_id", sa.String(40), primary_key=True),
            sa.Column("kind", sa.String(12), nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("version", sa.String(40), nullable=False),
            sa.Column("started_at", sa.String(27), nullable=False),
            sa.Column("last_seen_at", sa.String(27), nullable=False),
            sa.Column("switches_read_at", sa.String(27), nullable=True),
        )
        op.create_index("ix_replicas_last_seen_at", "replicas", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_replicas_last_seen_at", table_name="replicas")
    op.drop_table("replicas")
