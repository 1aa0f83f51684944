"""Window entries carry the item a ``count_distinct`` window counts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00

``window_entries.item`` is the SHA-256 of the canonical JSON of the window's ``field``
for the action (null for other aggregates, and for entries recorded before this
migration, which no ``count_distinct`` window can have made).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("window_entries")}
    if "item" not in have:
        with op.batch_alter_table("window_entries") as batch:
            batch.add_column(sa.Column("item", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("window_entries") as batch:
        batch.drop_column("item")
