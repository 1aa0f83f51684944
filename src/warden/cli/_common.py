"""What every ``warden`` subcommand shares: consoles, the --store option, error handling.

This is the one place that turns Warden's errors into CLI output: one readable line on
stderr (one per issue for a spec) and exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from warden.errors import SpecError, WardenError

out = Console()
err = Console(stderr=True)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="SQLAlchemy URL of the store [default: $WARDEN_STORE or sqlite:///.warden/warden.db]",
    ),
]

T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    """Print one error line; the caller raises the returned Exit."""
    err.print(f"[red]error[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def guard(fn: Callable[[], T]) -> T:
    """Run a command body; turn Warden's errors into one line each and exit 1."""
    try:
        return fn()
    except SpecError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {issue}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except WardenError as exc:
        raise fail(str(exc)) from None
