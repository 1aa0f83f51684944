"""``warden costs``: cost per run and per successful run, from the store
(``warden.economics.cost_report``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from warden.cli._common import StoreOpt, guard, out
from warden.cli._ledger import open_store
from warden.economics import DIMENSIONS, CostGroup, CostReport, cost_report, parse_by, parse_since
from warden.economics._reports import COMPARED, FLAG_ABOVE, duration_text

_LABELS = {
    "cost_per_run_p50": "cost per run p50",
    "cost_per_run_p95": "cost per run p95",
    "cost_per_success": "cost per successful run",
}


def costs(
    store: StoreOpt = None,
    since: Annotated[
        str,
        typer.Option(
            help="The window: runs started this long ago or less (7d, 24h, 90m), compared "
            "with the window of the same length before it."
        ),
    ] = "7d",
    by: Annotated[
        str,
        typer.Option(
            help=f"Group by these, comma-separated: {', '.join(DIMENSIONS)} (route: the "
            "model that answered; a run is in each route that answered one of its calls)."
        ),
    ] = "workflow",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's runs.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (money as decimal strings).")
    ] = False,
) -> None:
    """Cost per run (p50, p95) and per successful run, tokens and cache savings per group,
    with the change against the previous window; unit costs up more than 20% are flagged.

    Success: the task type's success check (success_when) held when the run finished; without one, outcome completed.

    Cost per successful run: the spend of all runs of the group, failed ones included, divided by the successful runs.
    """

    def body() -> None:
        window = parse_since(since)
        dims = parse_by(by)
        with open_store(store) as st:
            report = cost_report(st, since=window, by=dims, tenant=tenant)
        if as_json:
            typer.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
        else:
            _print(report)

    guard(body)


def _money(value: Decimal | None) -> str:
    """Readable USD: cents from $1 up, else up to 6 decimals (the JSON has it exactly)."""
    if value is None:
        return "—"
    if value >= 1:
        return f"${value:,.2f}"
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return f"${text}" if text != "0" or value == 0 else "<$0.000001"


def _growth(group: CostGroup, name: str) -> str:
    """How a flagged figure grew, in words when there is no percentage."""
    value = group.change.get(name)
    if value is not None:
        return f"{value:+.1f}%"
    now: Decimal | None = getattr(group.current, name)
    if now is None:  # spend and no success, where there were successes before
        return f"none succeeded (spent {_money(group.current.cost_usd)})"
    return f"from $0 to {_money(now)}"


def _change(group: CostGroup, name: str) -> str:
    value = group.change.get(name)
    text = "—" if value is None else f"{value:+.0f}%"
    return f"[red]{text} ▲[/red]" if name in group.flagged else text


def _cell(group: CostGroup, name: str, value: Decimal | None) -> str:
    return f"[red]{_money(value)}[/red]" if name in group.flagged else _money(value)


def _print(report: CostReport) -> None:
    window = duration_text(report.since)
    scope = f"tenant {report.tenant!r}" if report.tenant is not None else "all tenants"
    out.print(
        f"Costs of runs started in the last {window} "
        f"({report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC), {scope}",
        highlight=False,
    )
    if not report.groups:
        out.print(f"no runs started in the last {window}", highlight=False)
        return
    # Two spaces between columns and no edges: four group columns and the figures fit in
    # 100 columns. Savings get a column once the response cache has saved anything.
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), show_edge=False, show_footer=True)
    for dim in report.by:
        table.add_column(dim, footer="total" if dim == report.by[0] else "", overflow="fold")
    total = report.total
    cached = total.current.cache_hits > 0
    columns: dict[str, Callable[[CostGroup], str]] = {
        "runs": lambda g: str(g.current.runs),
        "ok": lambda g: str(g.current.successful),
        "$/run p50": lambda g: _cell(g, "cost_per_run_p50", g.current.cost_per_run_p50),
        "$/run p95": lambda g: _cell(g, "cost_per_run_p95", g.current.cost_per_run_p95),
        "$/success": lambda g: _cell(g, "cost_per_success", g.current.cost_per_success),
        "tokens": lambda g: f"{g.current.tokens:,}",
        **({"saved": lambda g: _money(g.current.saved_usd)} if cached else {}),
        "vs prev": lambda g: _change(g, "cost_per_success"),
    }
    for header, cell in columns.items():
        table.add_column(header, footer=cell(total), justify="right", no_wrap=True)
    for group in report.groups:
        table.add_row(
            *(escape(group.key[d] or "(none)") for d in report.by),
            *(cell(group) for cell in columns.values()),
        )
    out.print(table)
    for group in (*report.groups, report.total):
        if not group.flagged:
            continue
        where = ", ".join(f"{k}={v or '(none)'}" for k, v in group.key.items()) or "total"
        what = "; ".join(
            f"{_LABELS[name]} {_growth(group, name)}"
            for name in COMPARED
            if name in group.flagged
        )
        out.print(f"[red]▲[/red] {escape(where)}: {what}", highlight=False)
    open_runs = report.total.current.open_runs
    if open_runs:
        out.print(
            f"{open_runs} run(s) not finished yet: their spend so far is counted, "
            "they are not successful (yet).",
            highlight=False,
        )
    out.print(
        "ok: successful runs (the task type's success check; without one, the outcome "
        "completed). $/success: the spend of all runs, failed ones included, per successful "
        f"run. vs prev: $/success against the previous {window}. Red, ▲: up more than "
        f"{FLAG_ABOVE * 100:.0f}% against it (p50, p95 and $/success are compared).",
        highlight=False,
    )
