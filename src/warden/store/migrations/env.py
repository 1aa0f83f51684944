"""Alembic environment for Warden's store, run only through ``warden.store._migrate``.

There is no ``alembic.ini``: ``_migrate`` builds the ``Config`` in code and hands over an
open connection in ``config.attributes["connection"]``, already inside the transaction
(and holding the lock) that the whole upgrade runs in. Migrations join that transaction.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from warden.store._tables import metadata

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or not isinstance(connection, Connection):
    raise RuntimeError(
        "Warden's migrations run on a live connection: use `warden db upgrade --store URL`"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,  # for autogenerate only; upgrades never read it
    render_as_batch=True,  # SQLite alters tables by copy-and-move
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
