"""Schema migrations on both backends: a fresh upgrade builds exactly ``metadata``; upgrades
repeat harmlessly, adopt stores made before migrations, survive processes racing on a fresh
database; an out-of-date store is refused with the command that fixes it; ``warden db``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import PG_ADMIN_URL, PG_HINT, _pg_database
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from warden.errors import StoreError
from warden.store import Store, _migrate, metadata

HEAD = _migrate.head_revision()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it (the shared ``store_url`` one already has the schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = _pg_database()
    if url is None:
        if os.environ.get("WARDEN_REQUIRE_POSTGRES") == "1":
            pytest.fail(PG_HINT.format(url=PG_ADMIN_URL))
        pytest.skip(PG_HINT.format(url=PG_ADMIN_URL))
    yield url
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def schema_diff(url: str) -> list[Any]:
    """What autogenerate would change to make the database match ``metadata``."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


def sql(url: str, statement: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def create_all(url: str) -> None:
    """A store as Warden made it before it had migrations."""
    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()


SWITCH_ROW = (
    "INSERT INTO switches (scope, target, active, set_by, reason, set_at) "
    "VALUES ('tool', 'pay', true, 'ops', 'incident', '2024-01-01T00:00:00.000000Z')"
)


# --- upgrade ------------------------------------------------------------------------------


def test_fresh_upgrade_builds_exactly_the_tables_of_metadata(empty_url: str) -> None:
    store = Store(empty_url, create=False)
    assert _migrate.current_revision(store) is None
    _migrate.upgrade(store)
    assert _migrate.current_revision(store) == HEAD
    store.check_schema()
    store.dispose()
    assert schema_diff(empty_url) == []
    assert table_names(empty_url) == set(metadata.tables) | {"alembic_version"}


def test_store_constructor_upgrades_to_head(empty_url: str) -> None:
    store = Store(empty_url)  # create=True: what the SDK and the embedded default do
    store.check_schema()
    store.dispose()
    assert schema_diff(empty_url) == []


def test_upgrade_twice_is_a_no_op(empty_url: str) -> None:
    store = Store(empty_url)
    sql(empty_url, SWITCH_ROW)
    _migrate.upgrade(store)
    _migrate.upgrade(store)
    store.dispose()
    Store(empty_url).dispose()
    assert sql(empty_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert sql(empty_url, "SELECT scope, target FROM switches") == [("tool", "pay")]
    assert schema_diff(empty_url) == []


# --- stores made before migrations ----------------------------------------------------------


def test_store_created_by_create_all_is_adopted_without_losing_data(empty_url: str) -> None:
    create_all(empty_url)
    sql(empty_url, SWITCH_ROW)
    store = Store(empty_url, create=False)
    with pytest.raises(StoreError, match="revision none"):
        store.check_schema()
    _migrate.upgrade(store)
    store.check_schema()
    store.dispose()
    assert sql(empty_url, "SELECT scope, target FROM switches") == [("tool", "pay")]
    assert schema_diff(empty_url) == []


def test_older_pre_migration_store_gets_the_missing_tables_and_columns(empty_url: str) -> None:
    # The schema of the first release: no API keys, rate counters, outbox, deliveries, and
    # runs without end_user, opened_by, state.
    create_all(empty_url)
    for table in ("webhook_deliveries", "outbox", "rate_counters", "api_keys"):
        sql(empty_url, f"DROP TABLE {table}")
    for column in ("end_user", "opened_by", "state"):
        sql(empty_url, f"ALTER TABLE runs DROP COLUMN {column}")
    sql(empty_url, SWITCH_ROW)
    Store(empty_url).dispose()
    assert sql(empty_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert sql(empty_url, "SELECT scope, target FROM switches") == [("tool", "pay")]
    assert schema_diff(empty_url) == []


def test_window_entries_of_0006_keep_counting_after_0007(empty_url: str) -> None:
    """0007 adds ``window_entries.item`` (for count_distinct); older entries keep theirs."""
    store = Store(empty_url, create=False)
    _migrate.upgrade(store, "0006")
    assert "item" not in {c["name"] for c in inspect(store.engine).get_columns("window_entries")}
    sql(
        empty_url,
        "INSERT INTO window_entries (tenant, window_name, group_key, ts_us, value, action_id, void)"
        " VALUES ('t', 'w', 'c1', 1, 2.5, 'a1', false)",
    )
    _migrate.upgrade(store)
    store.dispose()
    assert sql(empty_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert sql(empty_url, "SELECT value, item FROM window_entries") == [(2.5, None)]
    assert schema_diff(empty_url) == []


def test_pre_migration_store_missing_a_required_column_is_refused(empty_url: str) -> None:
    create_all(empty_url)
    sql(empty_url, "DROP TABLE api_keys")
    sql(empty_url, "ALTER TABLE runs DROP COLUMN agent")
    with pytest.raises(StoreError, match=r"cannot adopt the existing table 'runs'.*'agent'"):
        Store(empty_url)
    # Nothing was half-done: the upgrade was one transaction.
    assert "alembic_version" not in table_names(empty_url)
    assert "api_keys" not in table_names(empty_url)


# --- check_current --------------------------------------------------------------------------


def test_check_current_on_an_empty_store_names_the_fix(empty_url: str) -> None:
    store = Store(empty_url, create=False)
    with pytest.raises(StoreError) as info:
        store.check_schema()
    store.dispose()
    message = str(info.value)
    assert f"revision none, expected {HEAD}" in message
    assert f"run `warden db upgrade --store {empty_url}`" in message


def test_check_current_on_a_store_whose_revision_row_is_missing(empty_url: str) -> None:
    store = Store(empty_url)
    sql(empty_url, "DELETE FROM alembic_version")
    with pytest.raises(StoreError, match=f"revision none, expected {HEAD}: run `warden db upgrade"):
        store.check_schema()
    store.dispose()


NEXT_REVISION = '''
"""A later revision (test only): alters a table, which SQLite can do only in batch mode."""

import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("switches") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch.alter_column("reason", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("switches") as batch:
        batch.alter_column("reason", existing_type=sa.Text(), nullable=False)
        batch.drop_column("note")
'''


@pytest.fixture
def next_migrations(tmp_path: Path) -> Path:
    """The shipped migrations plus one later revision, 9001."""
    location = tmp_path / "migrations"
    shutil.copytree(_migrate.MIGRATIONS, location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / "9001_next.py").write_text(NEXT_REVISION.format(head=HEAD))
    return location


def test_older_revision_is_refused_then_upgraded(
    empty_url: str, next_migrations: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(empty_url)  # at HEAD
    sql(empty_url, SWITCH_ROW)
    monkeypatch.setattr(_migrate, "MIGRATIONS", next_migrations)  # a newer Warden
    assert _migrate.head_revision() == "9001"
    with pytest.raises(StoreError) as info:
        store.check_schema()
    assert f"revision {HEAD}, expected 9001: run `warden db upgrade --store {empty_url}`" in str(
        info.value
    )
    _migrate.upgrade(store)
    store.check_schema()
    assert sql(empty_url, "SELECT target, reason, note FROM switches") == [
        ("pay", "incident", None)
    ]
    columns = {c["name"]: c for c in inspect(store.engine).get_columns("switches")}
    assert columns["reason"]["nullable"] and "note" in columns

    monkeypatch.undo()  # back to this Warden, which does not know 9001
    with pytest.raises(StoreError, match="revision 9001, newer than this version of Warden"):
        store.check_schema()
    with pytest.raises(StoreError, match="9001 is newer than this version of Warden"):
        _migrate.upgrade(store)
    store.dispose()


def test_password_is_masked() -> None:
    url = "postgresql+psycopg://warden:s3cret@db.example:5432/warden"
    assert _migrate.display_url(url) == "postgresql+psycopg://warden:***@db.example:5432/warden"
    store = Store("postgresql+psycopg://warden:s3cret@127.0.0.1:1/warden", create=False)
    with pytest.raises(StoreError) as info:
        store.check_schema()
    assert "s3cret" not in str(info.value) and "warden:***@" in str(info.value)
    with pytest.raises(StoreError) as info:
        _migrate.upgrade(store)
    assert "s3cret" not in str(info.value)
    store.dispose()


# --- processes racing on a fresh database ---------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys, time
    from warden.store import Store
    from warden.store._migrate import current_revision, head_revision

    head_revision()  # load alembic and the scripts before the start line
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    store = Store(sys.argv[1])
    print(current_revision(store))
    store.dispose()
    """
)


def test_processes_upgrading_a_fresh_store_at_once(empty_url: str, tmp_path: Path) -> None:
    script = tmp_path / "upgrade_worker.py"
    script.write_text(WORKER)
    start = time.time() + 4.0  # every process imports first, then all go at once
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), empty_url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == HEAD
    assert sql(empty_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert schema_diff(empty_url) == []


# --- warden db ------------------------------------------------------------------------------


def _db_registered() -> bool:
    from warden.cli._app import app

    return any(group.name == "db" for group in app.registered_groups)


def warden_db(*args: str, cwd: Path) -> tuple[int, str, str]:
    """``warden db ARGS``: the real command once it is registered, else its Typer app."""
    if _db_registered():
        done = subprocess.run(
            [sys.executable, "-m", "warden", "db", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=120,
        )
        return done.returncode, done.stdout, done.stderr
    from warden.cli._db import db_app

    result = CliRunner().invoke(db_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_db_status_and_upgrade(empty_url: str, tmp_path: Path) -> None:
    code, out, err = warden_db("status", "--store", empty_url, cwd=tmp_path)
    assert code == 1, out + err
    if empty_url.startswith("sqlite"):
        assert "no store at" in err and "warden db upgrade" in err
    else:
        assert "current  none" in out and f"head     {HEAD}" in out
        assert f"out of date: run `warden db upgrade --store {empty_url}`" in out

    code, out, err = warden_db("upgrade", "--store", empty_url, cwd=tmp_path)
    assert code == 0, err
    assert f"upgraded from revision none to {HEAD}" in out

    code, out, err = warden_db("status", "--store", empty_url, cwd=tmp_path)
    assert code == 0, err
    assert f"current  {HEAD}" in out and "up to date" in out

    code, out, err = warden_db("upgrade", "--store", empty_url, cwd=tmp_path)
    assert code == 0, err
    assert "nothing to do" in out
    assert schema_diff(empty_url) == []


def test_db_status_of_a_store_made_before_migrations(empty_url: str, tmp_path: Path) -> None:
    create_all(empty_url)
    code, out, _ = warden_db("status", "--store", empty_url, cwd=tmp_path)
    assert code == 1 and "current  none" in out and "warden db upgrade" in out
    assert warden_db("upgrade", "--store", empty_url, cwd=tmp_path)[0] == 0
    assert warden_db("status", "--store", empty_url, cwd=tmp_path)[0] == 0


@pytest.mark.parametrize("command", ["status", "upgrade"])
def test_db_errors_are_one_line_without_the_password(command: str, tmp_path: Path) -> None:
    url = "postgresql+psycopg://warden:s3cret@127.0.0.1:1/warden"
    code, out, err = warden_db(command, "--store", url, cwd=tmp_path)
    assert code == 1
    assert err.startswith("error ") and len(err.strip().splitlines()) == 1, err
    assert "warden:***@127.0.0.1:1" in err
    assert "s3cret" not in out + err and "Traceback" not in out + err
