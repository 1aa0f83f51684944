"""Budget counters and reservations (warden.economics._budgets).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 10:00:00

``budget_spend`` holds settled spend per budget counter and time bucket, ``budget_holds``
the money and tokens reserved for calls in flight, each with its expiry. Amounts are integer
nano-dollars. A store adopted from before migrations (see 0001) may have them already.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "budget_spend" not in have:
        op.create_table(
            "budget_spend",
            sa.Column("budget_key", sa.String(600), primary_key=True),
            sa.Column("bucket", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("spent_nusd", sa.BigInteger, nullable=False),
            sa.Column("spent_tokens", sa.BigInteger, nullable=False),
        )
    if "budget_holds" not in have:
        op.create_table(
            "budget_holds",
            sa.Column("reservation_id", sa.String(40), primary_key=True),
            sa.Column("budget_key", sa.String(600), primary_key=True),
            sa.Column("bucket", sa.BigInteger, nullable=False),
            sa.Column("nusd", sa.BigInteger, nullable=False),
            sa.Column("tokens", sa.BigInteger, nullable=False),
            sa.Column("created_us", sa.BigInteger, nullable=False),
            sa.Column("expires_us", sa.BigInteger, nullable=False),
        )
        op.create_index("ix_budget_holds_key", "budget_holds", ["budget_key", "expires_us"])


def downgrade() -> None:
    op.drop_index("ix_budget_holds_key", table_name="budget_holds")
    op.drop_table("budget_holds")
    op.drop_table("budget_spend")
