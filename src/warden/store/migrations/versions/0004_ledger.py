"""Signed ledger checkpoints: ``ledger_checkpoints`` and ``ledger_heads.checkpointed_seq``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 01:00:00

A checkpoint signs the heads of the streams that moved since the previous one (see
``warden.ledger._checkpoint``); ``checkpointed_seq`` remembers how far each stream is
covered. Existing streams start at 0: the first checkpoint covers all of them. The event
hash format is unchanged (tenant and run were already part of it), so no event is rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    # A store made by ``metadata.create_all`` before migrations, adopted by 0001, may
    # already have these.
    have = {c["name"] for c in inspector.get_columns("ledger_heads")}
    if "checkpointed_seq" not in have:
        with op.batch_alter_table("ledger_heads") as batch:
            batch.add_column(
                sa.Column("checkpointed_seq", sa.Integer(), nullable=False, server_default="0")
            )
    if "ledger_checkpoints" not in inspector.get_table_names():
        op.create_table(
            "ledger_checkpoints",
            sa.Column("n", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("created_at", sa.String(27), nullable=False),
            sa.Column("key_id", sa.String(16), nullable=False),
            sa.Column("body", sa.Text(), nullable=False),
            sa.Column("signature", sa.String(128), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("ledger_checkpoints")
    with op.batch_alter_table("ledger_heads") as batch:
        batch.drop_column("checkpointed_seq")
