"""``warden db``: the store's schema revision — show it, upgrade it.

Errors are one readable line on stderr and exit code 1, as everywhere in the CLI.
"""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from warden.cli._common import StoreOpt, guard, out
from warden.errors import WardenError
from warden.store import Store, default_store_url

db_app = typer.Typer(
    help="The store's schema: show its revision, upgrade it to this version of Warden.",
    no_args_is_help=True,
)

def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other backends and in-memory databases)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


@db_app.command("upgrade")
def db_upgrade(store: StoreOpt = None) -> None:
    """Migrate the store to this version's schema (creating it if empty); safe to repeat."""
    from warden.store._migrate import current_revision, display_url, head_revision, upgrade

    url = store or default_store_url()

    def body() -> None:
        st = Store(url, create=False)
        try:
            before = current_revision(st)
            upgrade(st)
            after = current_revision(st)
        finally:
            st.dispose()
        where = display_url(url)
        if before == after:
            out.print(
                f"store {where} is at revision {after} (head): nothing to do",
                highlight=False,
                soft_wrap=True,
            )
        else:
            out.print(
                f"store {where} upgraded from revision {before or 'none'} to {after}"
                + (" (head)" if after == head_revision() else ""),
                highlight=False,
                soft_wrap=True,
            )

    guard(body)


@db_app.command("status")
def db_status(store: StoreOpt = None) -> None:
    """Show the store's schema revision and this version's; exit 1 if it is out of date."""
    from warden.store._migrate import current_revision, display_url, head_revision, known_revision

    url = store or default_store_url()

    def body() -> bool:
        path = _sqlite_file(url)
        if path is not None and not path.exists():
            raise WardenError(f"no store at {path}; run `warden db upgrade --store {url}`")
        st = Store(url, create=False)
        try:
            current = current_revision(st)
        finally:
            st.dispose()
        head = head_revision()
        where = display_url(url)
        out.print(f"store    {where}", highlight=False, soft_wrap=True)
        out.print(f"current  {current or 'none'}", highlight=False, soft_wrap=True)
        out.print(f"head     {head}", highlight=False, soft_wrap=True)
        if current == head:
            out.print("[green]up to date[/green]", highlight=False, soft_wrap=True)
            return True
        if current is not None and not known_revision(current):
            fix = "the store is newer than this version of Warden: upgrade Warden"
        else:
            fix = f"run `warden db upgrade --store {where}`"
        out.print(f"[red]out of date[/red]: {fix}", highlight=False, soft_wrap=True)
        return False

    if not guard(body):
        raise typer.Exit(1)
