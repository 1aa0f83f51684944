"""The PII vault: tenant keys, kept raw values, recorded reads (warden.telemetry._vault).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 17:30:00

``vault_keys`` holds each tenant's secret wrapped by the server's master key (NULL once
shredded); ``vault_values`` the raw value of a PII token, sealed with the tenant's key,
where the spec keeps raw values; ``vault_reads`` one row per read of a raw value.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "vault_keys" not in existing:
        op.create_table(
            "vault_keys",
            sa.Column("tenant", sa.String(120), primary_key=True),
            sa.Column("generation", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("key_id", sa.String(16), nullable=False),
            sa.Column("wrapped", sa.Text, nullable=True),
            sa.Column("created_at", sa.String(27), nullable=False),
            sa.Column("shredded_at", sa.String(27), nullable=True),
            sa.Column("shredded_by", sa.String(120), nullable=True),
        )
    if "vault_values" not in existing:
        op.create_table(
            "vault_values",
            sa.Column("tenant", sa.String(120), primary_key=True),
            sa.Column("token", sa.String(80), primary_key=True),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("sealed", sa.Text, nullable=False),
            sa.Column("created_at", sa.String(27), nullable=False),
        )
    if "vault_reads" not in existing:
        op.create_table(
            "vault_reads",
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                primary_key=True,
                autoincrement=True,
            ),
            sa.Column("tenant", sa.String(120), nullable=False),
            sa.Column("ref", sa.String(200), nullable=False),
            sa.Column("reader", sa.String(120), nullable=False),
            sa.Column("role", sa.String(20), nullable=False),
            sa.Column("purpose", sa.String(200), nullable=False),
            sa.Column("at", sa.String(27), nullable=False),
        )
        op.create_index("ix_vault_reads_tenant_at", "vault_reads", ["tenant", "at"])


def downgrade() -> None:
    op.drop_index("ix_vault_reads_tenant_at", table_name="vault_reads")
    op.drop_table("vault_reads")
    op.drop_table("vault_values")
    op.drop_table("vault_keys")
