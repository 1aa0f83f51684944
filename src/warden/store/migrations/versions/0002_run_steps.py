"""Run counters that hold across replicas: ``runs.steps`` and ``runs.state_version``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 09:10:00

``steps`` is the run's step counter, taken atomically by each governed call over HTTP
(``UPDATE runs SET steps = steps + 1 ... RETURNING``), so every action id ``<run>.<step>``
is unique even when calls of one run reach several replicas at once. ``state_version``
counts writes of ``runs.state``: a call writes its counters only if no other call wrote
them since it read them, and merges them otherwise. Existing runs get ``steps`` from the
counters in ``runs.state``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    conn = op.get_bind()
    # A store made by ``metadata.create_all`` before migrations existed, and adopted by
    # 0001, may already have the columns.
    have = {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    with op.batch_alter_table("runs") as batch:
        for name in ("steps", "state_version"):
            if name not in have:
                batch.add_column(
                    sa.Column(name, sa.Integer(), nullable=False, server_default="0")
                )
    rows = conn.execute(sa.text("SELECT run_id, state FROM runs WHERE state IS NOT NULL")).all()
    for run_id, state in rows:
        try:
            steps = int(json.loads(state).get("steps", 0))
        except (ValueError, TypeError, AttributeError):
            continue  # unreadable counters: the run restarts its step count at 0
        conn.execute(
            sa.text("UPDATE runs SET steps = :steps WHERE run_id = :run_id"),
            {"steps": steps, "run_id": run_id},
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("state_version")
        batch.drop_column("steps")
