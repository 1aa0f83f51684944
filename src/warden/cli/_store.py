"""``warden store prune``: delete operational rows past their use (store._retention)."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from warden.cli._common import StoreOpt, guard, out
from warden.cli._ledger import open_store
from warden.store._retention import prune

store_app = typer.Typer(
    help="Housekeeping of the store: prune window entries, idempotency records, outbox rows "
    "and deliveries past their use.",
    no_args_is_help=True,
)


@store_app.command("prune")
def store_prune(
    store: StoreOpt = None,
    window_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep window entries this many days (at least the longest window period of "
            "your specs) [default: window_days of WARDEN_RETENTION, 31]",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object of counts.")] = False,
) -> None:
    """Delete window entries older than the longest window, `done` idempotency records of
    finished runs older than idempotency_days, delivered or failed notifications older than
    outbox_days with their deliveries, old rate counters and expired model-cache entries.
    Pending notifications and unsettled idempotency records are never touched."""

    def body() -> None:
        from warden.server._settings import ServerSettings

        settings = ServerSettings().retention
        keep = None if window_days is None else timedelta(days=window_days)
        if keep is not None:
            settings = settings.model_copy(update={"window_days": window_days})
        with open_store(store) as st:
            report = prune(st, settings, dry_run=dry_run)
        if as_json:
            sys.stdout.write(json.dumps({"dry_run": dry_run, **report.to_json()}) + "\n")
            return
        table = Table("table", "would delete" if dry_run else "deleted")
        for name, n in report.to_json().items():
            table.add_row(name, str(n))
        out.print(table)

    guard(body)
