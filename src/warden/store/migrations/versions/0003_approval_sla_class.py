"""Approvals remember their SLA class: ``approvals.sla_class``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 09:40:00

A rule may name an SLA class (``sla: urgent``) declared under ``escalation.sla_classes``;
the approval keeps it so the queue can be filtered by it and an escalation gives the next
role the same time. NULL means the workflow's default SLA (every approval made before).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A store made by ``metadata.create_all`` before migrations, adopted by 0001, may
    # already have the column.
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("approvals")}
    if "sla_class" not in have:
        with op.batch_alter_table("approvals") as batch:
            batch.add_column(sa.Column("sla_class", sa.String(120), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("sla_class")
