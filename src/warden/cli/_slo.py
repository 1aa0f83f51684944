"""``warden slo``: live SLOs from the rollups (``warden.telemetry.slo_report``), their
rebuild from the ledger, and ``warden alerts``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from warden.cli._common import StoreOpt, guard, out
from warden.cli._ledger import open_store
from warden.spec import load_spec
from warden.spec._models import SLO
from warden.telemetry import SloGroup, SloReport, list_alerts, rebuild, slo_report


def slo(
    store: StoreOpt = None,
    spec: Annotated[
        list[Path] | None,
        typer.Option(
            "--spec",
            help="A workflow spec whose slo: targets the figures are judged against "
            "(repeat for several workflows); without one, figures only.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    workflow: Annotated[str | None, typer.Option(help="Only this workflow.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    window: Annotated[
        str, typer.Option(help="The window the table shows: 1h, 7d or 30d (--json has all).")
    ] = "7d",
    at: Annotated[
        str | None,
        typer.Option(
            help="Measure as of this time (ISO 8601 with a zone, e.g. 2026-03-10T12:30Z) "
            "instead of now."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every window, drift and breach as JSON.")
    ] = False,
    do_rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Recompute the rollups from the ledger first (after a crash lost the last "
            "seconds of counts, or after an upgrade); best with the servers stopped.",
        ),
    ] = False,
) -> None:
    """Live SLOs per workflow, tenant and task type: success rate, p50/p95 latency,
    escalation and policy-violation rates, cost per successful task, over 1h, 7d and 30d,
    with the 7d vs 30d drift; targets of the spec's slo: that a window misses in red.

    Runs count in the hour they started; a window spans the hours overlapping it.
    """

    def body() -> None:
        if window not in ("1h", "7d", "30d"):
            raise typer.BadParameter(f"--window {window!r}: give 1h, 7d or 30d")
        targets: dict[str, SLO] = {}
        for path in spec or []:
            loaded = load_spec(path)
            targets[loaded.spec.name] = loaded.spec.slo
        with open_store(store) as st:
            if do_rebuild:
                seen = rebuild(st)
                if not as_json:
                    out.print(f"rebuilt the rollups from {seen} ledger events", highlight=False)
            report = slo_report(
                st, targets=targets, tenant=tenant, workflow=workflow, now=_parse_at(at)
            )
        if as_json:
            typer.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
        else:
            _print(report, window)

    guard(body)


def _parse_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"--at {text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise typer.BadParameter(f"--at {text!r} has no zone; add Z for UTC")
    return when.astimezone(UTC)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _drift(value: float | None) -> str:
    return "—" if value is None else f"{value:+.0f}%"


def _missed(group: SloGroup, window: str, figure: str, text: str) -> str:
    if any(b.window == window and b.figure == figure for b in group.breaches):
        return f"[red]{text} ▼[/red]"
    return text


def _print(report: SloReport, window: str) -> None:
    scope = f"tenant {report.tenant!r}" if report.tenant is not None else "all tenants"
    out.print(
        f"SLOs over the last {window}, {scope} (as of {report.now:%Y-%m-%d %H:%M} UTC)",
        highlight=False,
    )
    if not report.groups:
        out.print("no runs in the last 30d", highlight=False)
        return
    # One table per workflow and tenant, so the figures fit 80 columns.
    by_owner: dict[tuple[str, str], list[SloGroup]] = {}
    for g in report.groups:
        by_owner.setdefault((str(g.key["workflow"]), str(g.key["tenant"])), []).append(g)
    for (workflow, tenant), groups in by_owner.items():
        table = Table(
            title=f"{escape(workflow)} / {escape(tenant)}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            padding=(0, 1, 0, 0),
            show_edge=False,
        )
        table.add_column("task type", overflow="fold")
        for header in ("runs", "success", "p50 ms", "p95 ms", "escal.", "violat.", "$/task"):
            table.add_column(header, justify="right", no_wrap=True)
        for g in groups:
            f = g.windows[window]
            cost = "—" if f.cost_per_task_usd is None else f"${f.cost_per_task_usd:.4f}"
            table.add_row(
                escape(g.key["task_type"] or "(none)"),
                str(f.runs_started),
                _missed(g, window, "success_rate", _pct(f.success_rate)),
                _missed(g, window, "p50_latency_ms", _ms(f.p50_latency_ms)),
                _missed(g, window, "p95_latency_ms", _ms(f.p95_latency_ms)),
                _missed(g, window, "escalation_rate", _pct(f.escalation_rate)),
                _missed(g, window, "policy_violation_rate", _pct(f.policy_violation_rate)),
                _missed(g, window, "cost_per_task_usd", cost),
            )
        out.print(table)
    for g in report.groups:
        moved = [
            f"{_DRIFT_LABELS[name]} {_drift(value)}"
            for name, value in g.drift.items()
            if value is not None and abs(value) >= DRIFT_SHOWN
        ]
        if moved:
            where = "/".join(escape(str(g.key[k] or "(none)")) for k in g.key)
            out.print(f"drift 7d vs 30d, {where}: {', '.join(moved)}", highlight=False)
    out.print(
        "success: finished runs whose success check held (without one, outcome completed). "
        "p50/p95: governed calls that executed (upper bound of a ~19% bucket). escal.: "
        "approval requests per action; violat.: actions denied by a rule. $/task: spend of "
        f"all runs per successful run. Red ▼: misses the spec's slo:. Drift of "
        f"{DRIFT_SHOWN:.0f}% or more is listed; --json has every window and figure.",
        highlight=False,
    )


#: drift (percent, 7 d against 30 d) at or above which the table lists it
DRIFT_SHOWN = 10.0
_DRIFT_LABELS = {
    "success_rate": "success",
    "p50_latency_ms": "p50",
    "p95_latency_ms": "p95",
    "escalation_rate": "escalations",
    "policy_violation_rate": "violations",
    "cost_per_task_usd": "$/task",
}


def alerts(
    store: StoreOpt = None,
    state: Annotated[
        str | None, typer.Option(help="Only alerts in this state: firing or resolved.")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's alerts.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the alerts as JSON.")] = False,
) -> None:
    """Alerts of the specs' alerts: that fired, newest first (docs/slo-alerts.md)."""

    def body() -> None:
        if state not in (None, "firing", "resolved"):
            raise typer.BadParameter(f"--state {state!r}: give firing or resolved")
        with open_store(store) as st:
            found = list_alerts(st, tenant=tenant, state=state)
        if as_json:
            typer.echo(json.dumps({"alerts": found}, indent=2, ensure_ascii=False))
            return
        if not found:
            out.print("no alerts", highlight=False)
            return
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), show_edge=False)
        for header in ("state", "workflow", "alert", "tenant"):
            table.add_column(header, no_wrap=True)
        table.add_column("subject", overflow="fold")
        table.add_column("fired (UTC)", no_wrap=True)
        table.add_column("resolved", no_wrap=True)
        for a in found:
            table.add_row(
                *(escape(str(a[k])) for k in ("state", "workflow", "alert", "tenant", "subject")),
                _when(a["fired_at"]),
                _when(a["resolved_at"]),
            )
        out.print(table)

    guard(body)


def _when(value: str | None) -> str:
    """``03-10 12:30`` of an ISO time (the JSON has it whole)."""
    return "—" if value is None else value[5:16].replace("T", " ")
