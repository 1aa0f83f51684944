"""API keys say what they act as: ``api_keys.agent``, ``workflows``, ``approval_roles``, ``bridge``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 00:40:00

An agent key is bound to one agent of the spec and, optionally, to the workflows it may
run; approver and admin keys carry the approval roles they may decide for; a bridge key
(chat, email) may decide on behalf of a named person. Keys made before this revision get
no binding and fail closed: an unbound agent key opens no run and acts on none, a key
without approval roles decides no approval, until an operator binds it
(``warden keys bind KEY_ID --agent NAME`` / ``--approval-role ROLE``); the secret stays
the same, so nothing has to be redistributed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("agent", "workflows", "approval_roles", "bridge")


def upgrade() -> None:
    # A store made by ``metadata.create_all`` and adopted by 0001 may already have them.
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("api_keys")}
    with op.batch_alter_table("api_keys") as batch:
        if "agent" not in have:
            batch.add_column(sa.Column("agent", sa.String(120), nullable=True))
        if "workflows" not in have:
            batch.add_column(sa.Column("workflows", sa.Text(), nullable=True))
        if "approval_roles" not in have:
            batch.add_column(sa.Column("approval_roles", sa.Text(), nullable=True))
        if "bridge" not in have:
            batch.add_column(
                sa.Column("bridge", sa.Boolean(), nullable=False, server_default=sa.false())
            )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
