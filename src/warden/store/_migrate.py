"""Schema migrations: Alembic revisions shipped in ``warden/store/migrations``.

``upgrade`` brings a store to the newest revision: it creates the schema in an empty
database, adopts a store created before Warden had migrations (tables, no
``alembic_version``; see ``versions/0001_initial.py``), and does nothing on a store that is
already current. Several processes may upgrade the same store at once (replicas starting
together, workers opening the default SQLite file): the upgrade runs in one transaction
under a lock — a session-level ``pg_advisory_lock`` on PostgreSQL, the database write lock
(``BEGIN IMMEDIATE``) on SQLite — and re-reads the revision once it holds the lock, so
exactly one process migrates and the others find the store current. DDL is transactional
on both backends, so a failed upgrade leaves the store as it was.

Alembic is imported inside the functions: importing ``warden.store`` stays cheap.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from warden.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from warden.store._engine import Store

# The migration scripts, inside the installed package.
MIGRATIONS = Path(__file__).parent / "migrations"

# Key of the PostgreSQL advisory lock held while upgrading ("wardenmg" in ASCII).
_PG_LOCK_KEY = 0x77617264656E6D67


def display_url(url: str) -> str:
    """The store URL with any password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", url)


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's message on one line (psycopg's run over several)."""
    cause = exc.orig if isinstance(exc, OperationalError) else exc
    return " ".join(str(cause).split())


def make_config(connection: Connection | None = None, **attributes: Any) -> Config:
    """An Alembic ``Config`` for Warden's migrations; no ``alembic.ini`` is involved.

    ``env.py`` runs the migrations on ``connection`` (``config.attributes["connection"]``).
    Developers write a new revision with::

        from alembic import command
        command.revision(make_config(), "what changes", rev_id="0002")
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes.update(attributes)
    return config


@functools.cache
def _scripts(location: Path) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(location))


def head_revision() -> str:
    """The newest revision this version of Warden knows."""
    head = _scripts(MIGRATIONS).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise StoreError(f"no migrations found in {MIGRATIONS}")
    return head


def known_revision(revision: str) -> bool:
    """Whether this version of Warden has the revision (False: the store is newer)."""
    from alembic.util import CommandError

    try:
        return _scripts(MIGRATIONS).get_revision(revision) is not None
    except CommandError:
        return False


def _revision_of(conn: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def current_revision(store: Store) -> str | None:
    """The store's revision; None for an empty store or one created before migrations."""
    try:
        with store.read() as conn:
            return _revision_of(conn)
    except OperationalError as exc:
        raise StoreError(f"cannot reach store {display_url(store.url)}: {_reason(exc)}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot read the schema revision of {display_url(store.url)}: {_reason(exc)}"
        ) from exc


def check_current(store: Store) -> None:
    """Raise ``StoreError`` unless the store is at ``head_revision()``."""
    current, head = current_revision(store), head_revision()
    if current == head:
        return
    url = display_url(store.url)
    if current is not None and not known_revision(current):
        raise StoreError(
            f"store {url} has schema revision {current}, newer than this version of Warden "
            f"knows (its newest is {head}): upgrade Warden"
        )
    raise StoreError(
        f"store {url} has schema revision {current or 'none'}, expected {head}: "
        f"run `warden db upgrade --store {url}`"
    )


def upgrade(store: Store, revision: str = "head") -> None:
    """Migrate the store to ``revision`` (the newest by default); safe to call at any time.

    A store already there costs one read; no lock is taken.
    """
    target = head_revision() if revision == "head" else revision
    url = display_url(store.url)
    if current_revision(store) == target:
        return
    from alembic import command
    from alembic.util import CommandError

    try:
        with _upgrade_lock(store) as conn:
            current = _revision_of(conn)
            if current == target:
                return  # another process got there first
            if current is not None and not known_revision(current):
                raise StoreError(
                    f"its schema revision {current} is newer than this version of Warden "
                    f"knows (its newest is {head_revision()}): upgrade Warden"
                )
            adopt = current is None and inspect(conn).has_table("ledger_events")
            command.upgrade(make_config(conn, warden_adopt=adopt), target)
    except StoreError as exc:
        raise StoreError(f"cannot upgrade store {url}: {exc}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot upgrade store {url}: {_reason(exc)}") from exc
    except CommandError as exc:
        raise StoreError(f"cannot upgrade store {url}: {exc}") from exc


@contextmanager
def _upgrade_lock(store: Store) -> Iterator[Connection]:
    """A connection in a transaction that holds the store's migration lock."""
    if store.is_sqlite:
        # BEGIN IMMEDIATE (see _engine): the write lock, waited for up to busy_timeout.
        with store.engine.connect().execution_options(warden_write=True) as conn, conn.begin():
            yield conn
        return
    with store.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
        conn.commit()  # the lock is the session's: it outlives this transaction
        try:
            with conn.begin():
                yield conn
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
            except SQLAlchemyError:
                conn.invalidate()  # closing the session releases the lock
