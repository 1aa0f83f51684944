"""The model reply cache (a declared model's ``cache:``; warden.pipeline.stages._model).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 14:30:00

``model_cache`` keeps a model's reply to a cacheable request until ``expires_us``, per
tenant (the tenant is part of the primary key: no lookup crosses tenants).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "model_cache" in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        "model_cache",
        sa.Column("tenant", sa.String(120), primary_key=True),
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("reply", sa.Text, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_model_cache_expires", "model_cache", ["expires_us"])


def downgrade() -> None:
    op.drop_index("ix_model_cache_expires", table_name="model_cache")
    op.drop_table("model_cache")
