"""Idempotency keys bound to their call, and resource locks for ``serialize_on``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 01:00:00

``idempotency.fingerprint`` is the SHA-256 of (workflow, tool, canonical args) of the call
that first used a key; a key reused for another call is refused as a conflict. Keys
recorded before this migration have no fingerprint and keep replaying as before.
``resource_locks`` holds the leased locks of tools declared with ``serialize_on`` on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("idempotency")}
    if "fingerprint" not in have:
        with op.batch_alter_table("idempotency") as batch:
            batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
    if "resource_locks" not in inspector.get_table_names():
        op.create_table(
            "resource_locks",
            sa.Column("key", sa.String(300), primary_key=True),
            sa.Column("holder", sa.String(60), nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("resource_locks")
    with op.batch_alter_table("idempotency") as batch:
        batch.drop_column("fingerprint")
