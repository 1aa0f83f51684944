"""``warden``: validate specs, run the demo, flip kill switches, read and verify the ledger,
report costs.

Every ``WardenError`` becomes one readable line on stderr and exit code 1 (2 for usage
errors typer itself detects). No traceback reaches the user for bad input.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from warden.cli import _costs, _policy, _replay, _serve, _slo
from warden.cli._common import StoreOpt, err, fail, guard, out
from warden.cli._db import db_app
from warden.cli._eval import eval_app
from warden.cli._ledger import ledger_app
from warden.cli._store import store_app
from warden.cli._vault import vault_app
from warden.errors import SpecError, SpecIssue, WardenError
from warden.ledger import LedgerWriter
from warden.pipeline import Scope, Switch, SwitchBoard
from warden.pipeline._replicas import LIVE_S, Replica, list_replicas, live_replicas
from warden.spec import LoadedSpec
from warden.store import Store, default_store_url

app = typer.Typer(
    help="Warden: a control plane for AI agents. Every tool call governed, every action on a verifiable ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
switch_app = typer.Typer(
    help="Kill switches: stop calls at global, tenant, workflow or tool scope.",
    no_args_is_help=True,
)
app.add_typer(switch_app, name="switch")
app.add_typer(ledger_app, name="ledger")
app.command("serve")(_serve.serve)
app.add_typer(_serve.keys_app, name="keys")
app.add_typer(_serve.approvals_app, name="approvals")
app.add_typer(db_app, name="db")
app.add_typer(vault_app, name="vault")
app.add_typer(store_app, name="store")
app.add_typer(_policy.policy_app, name="policy")
app.command("explain")(_policy.explain)
app.command("costs")(_costs.costs)
app.command("slo")(_slo.slo)
app.command("alerts")(_slo.alerts)
app.add_typer(eval_app, name="eval")
app.command("replay")(_replay.replay_cmd)
app.command("diff")(_replay.diff_cmd)
eval_app.command("import-approvals")(_replay.import_approvals_cmd)

def _store(url: str | None, *, must_exist: bool = True) -> Store:
    url = url or default_store_url()
    if must_exist and url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path != ":memory:" and not Path(path).exists():
            raise WardenError(f"no store at {path}; run `warden demo` first or pass --store URL")
    return Store(url)


@app.command()
def validate(
    files: Annotated[
        list[Path], typer.Argument(help="Workflow spec files (YAML).", show_default=False)
    ],
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tools",
            help="Tool factory module:function or file.py:function returning the spec's tools "
            "(as for `warden serve`), one per spec file, same order: rules, facts and windows "
            "are then checked against the tools' schemas.",
        ),
    ] = None,
) -> None:
    """Check workflow specs: exit 0 if all are valid, else 1 with every error located."""
    from warden.policy._engine import raw_condition_issues

    if tools and len(tools) != len(files):
        err.print(
            f"[red]error[/red] give one --tools factory per spec file, in the same order "
            f"({len(files)} files, {len(tools)} factories)",
            highlight=False,
        )
        raise typer.Exit(1)
    failed = False
    for n, file in enumerate(files):
        loaded, issues, warnings = _validate_one(file, tools[n] if tools else None)
        if issues:
            failed = True
            if loaded is None and file.exists():
                # The spec failed before its rules were compiled: report their errors too.
                seen = {str(i) for i in issues}
                extra = raw_condition_issues(file.read_text(encoding="utf-8"), str(file))
                issues += [i for i in extra if str(i) not in seen]
                issues.sort(key=lambda i: i.line or 0)
            for issue in issues:
                err.print(f"[red]error[/red] {issue}", highlight=False, soft_wrap=True)
            continue
        assert loaded is not None
        from warden.policy._lint import lint

        shown = set()
        for warning in [*warnings, *lint(loaded)]:  # worth a look: the exit code stays 0
            if str(warning) in shown:
                continue
            shown.add(str(warning))
            err.print(
                f"[yellow]warning[/yellow] {escape(str(warning))}", highlight=False, soft_wrap=True
            )
        out.print(
            f"[green]ok[/green] {file}: workflow {loaded.spec.name!r} v{loaded.spec.version}, "
            f"{len(loaded.spec.tools) - len(loaded.spec.models)} tools, "
            + (
                f"{len(loaded.spec.models)} models, {len(loaded.spec.routes)} routes, "
                f"{len(loaded.spec.budgets)} budgets, "
                if loaded.spec.models
                else ""
            )
            + f"{len(loaded.spec.policies)} rules, fingerprint {loaded.fingerprint[:16]}",
            highlight=False,
        )
    if not tools:
        out.print(
            "note: arguments, facts and windows were not checked against the tools' schemas "
            "(pass --tools MODULE:FUNCTION)",
            highlight=False,
            soft_wrap=True,
        )
    if failed:
        raise typer.Exit(1)


def _validate_one(
    file: Path, factory: str | None
) -> tuple[LoadedSpec | None, list[SpecIssue], tuple[SpecIssue, ...]]:
    """The spec, every issue found in it (the loader's, the rules', and the type
    checker's, against the tools ``factory`` returns when given) and the policy's warnings
    (``Policy.warnings``: e.g. an autonomous workflow's money tool no rule allows)."""
    from warden.policy._typecheck import checked_policy
    from warden.spec import load_spec
    from warden.tools import ToolRegistry

    try:
        loaded = load_spec(file)
    except SpecError as exc:
        return None, list(exc.issues), ()
    registry = None
    issues: list[SpecIssue] = []
    if factory is not None:
        from warden.tools._factory import load_factory

        try:
            implementations = load_factory(factory)()
        except WardenError as exc:
            return loaded, [SpecIssue(str(file), None, "", f"--tools {factory}: {exc}")], ()
        except Exception as exc:  # the user's factory failed: one line, not a traceback
            message = f"--tools {factory} failed: {type(exc).__name__}: {exc}"
            return loaded, [SpecIssue(str(file), None, "", message)], ()
        try:
            registry = ToolRegistry.build(loaded, implementations)
        except SpecError as exc:
            issues += exc.issues
    warnings: tuple[SpecIssue, ...] = ()
    try:
        warnings = checked_policy(loaded, registry).warnings
    except SpecError as exc:
        issues += exc.issues
    issues.sort(key=lambda i: i.line or 0)
    return loaded, issues, warnings


@app.command()
def demo(
    store: StoreOpt = None,
    tickets: Annotated[
        int, typer.Option(help="How many helpdesk tickets the agent works.", min=1, max=5000)
    ] = 200,
    seed: Annotated[
        int, typer.Option(help="Seed of the synthetic helpdesk and the scripted agent.")
    ] = 7,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Then open the console: refunds waiting for approval, a key to paste (admin "
            "of the demo's tenant, approving as support_lead), and `warden serve` until Ctrl-C.",
        ),
    ] = False,
    pending: Annotated[
        int, typer.Option(help="With --serve: refunds put in the approval queue.", min=1, max=100)
    ] = 5,
    host: Annotated[str, typer.Option(help="With --serve: interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="With --serve: TCP port.", min=1, max=65535)] = 8000,
) -> None:
    """Run the refund-triage demo: a scripted agent works helpdesk tickets through Warden.

    With --serve, leave the operator console running for a newcomer: refunds waiting for a
    support lead, a key to sign in with (admin of the demo's tenant only, approving as
    support_lead: the queue, the dashboards, the ledger and the switches), and the server on
    HOST:PORT."""
    from warden.demo import QUEUE_ROLE, prepare_console, run_demo

    if serve and not _port_free(host, port):
        raise fail(f"{host}:{port} is in use: stop what listens there or pick another --port")
    summary = guard(
        lambda: run_demo(
            store_url=store, tickets=tickets, seed=seed, console=out, progress=not quiet
        )
    )
    if not serve:
        return
    ready = guard(lambda: prepare_console(store, summary["tenant"], pending, seed=seed))
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/ui"
    rule = "-" * 72
    for line in [
        "",
        rule,
        f"The console is ready: {len(ready.approvals)} refunds over $100 wait for a "
        f"{QUEUE_ROLE} in tenant {ready.tenant}.",
        f"  Open      {url}",
        "  Sign in   with this key (admin of that tenant, approving as support_lead; paste it,"
        " it is shown once and never put in a URL):",
        f"  Key       {ready.approver_key}",
        "  Ctrl-C stops the server.",
        rule,
    ]:
        out.print(line, highlight=False, soft_wrap=True, markup=False)
    _serve.serve(host=host, port=port, store=store, migrate=True)


def _port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on now (checked before the demo's run, so a
    busy port costs one line, not the demo's minute)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@switch_app.command("on")
def switch_on(
    scope: Annotated[Scope, typer.Argument(help="global, tenant, workflow or tool")],
    target: Annotated[
        str | None, typer.Argument(help="The tenant, workflow or tool name (not for global).")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who is flipping the switch.")] = "",
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded on the ledger).")] = "",
    store: StoreOpt = None,
) -> None:
    """Activate a kill switch: the next matching call in every process is denied."""
    _set_switch(scope, target, True, by, reason, store)


@switch_app.command("off")
def switch_off(
    scope: Annotated[Scope, typer.Argument(help="global, tenant, workflow or tool")],
    target: Annotated[
        str | None, typer.Argument(help="The tenant, workflow or tool name (not for global).")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who is flipping the switch.")] = "",
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded on the ledger).")] = "",
    store: StoreOpt = None,
) -> None:
    """Release a kill switch."""
    _set_switch(scope, target, False, by, reason, store)


def _set_switch(
    scope: Scope, target: str | None, active: bool, by: str, reason: str, store: str | None
) -> None:
    def body() -> None:
        st = _store(store, must_exist=False)
        ledger = LedgerWriter(st)
        sw = SwitchBoard(st, ledger).set(scope, target, active=active, by=by, reason=reason)
        ledger.flush()
        state = "[red]ON[/red]" if active else "[green]off[/green]"
        out.print(
            f"kill switch {sw.scope.value} {sw.target!r} is {state} (by {sw.set_by}: {sw.reason})"
        )

    guard(body)


LiveOpt = Annotated[
    float,
    typer.Option(
        "--live-s",
        envvar="WARDEN_REPLICA_LIVE_S",
        min=0.1,
        help="A replica is live when seen within this many seconds.",
    ),
]


def _seen_text(sw: Switch, live: list[Replica]) -> str:
    """Which live replicas have read the switch: "2 of 2", or whom it waits for."""
    if not live:
        return "-"
    waiting = [r.label for r in live if not r.has_seen(sw.set_at)]
    if not waiting:
        return f"{len(live)} of {len(live)}"
    return f"waiting for {', '.join(waiting)}"


@switch_app.command("list")
def switch_list(store: StoreOpt = None, live_s: LiveOpt = LIVE_S) -> None:
    """List every switch, its state, and which live replicas have read it."""

    def body() -> None:
        st = _store(store)
        live = live_replicas(st, live_s)
        # names and times stay whole; reasons and the replicas wrap
        table = Table(
            Column("scope", no_wrap=True),
            Column("target", no_wrap=True),
            Column("state", no_wrap=True),
            "set by",
            "at (UTC)",
            Column("reason", overflow="fold"),
            Column("seen by", overflow="fold"),
        )
        for sw in SwitchBoard(st, LedgerWriter(st)).list():
            table.add_row(
                sw.scope.value,
                sw.target,
                "[red]ON[/red]" if sw.active else "off",
                sw.set_by,
                f"{sw.set_at:%Y-%m-%d %H:%M:%S}",
                sw.reason,
                _seen_text(sw, live),
            )
        out.print(table)

    guard(body)


@app.command("replicas")
def replicas_cmd(
    store: StoreOpt = None,
    live_s: LiveOpt = LIVE_S,
    as_json: Annotated[bool, typer.Option("--json", help="Print the replicas as JSON.")] = False,
) -> None:
    """The processes registered on the store (every `warden serve` worker; SDK gateways that
    registered): when each was last seen and last read the kill switches."""

    def body() -> None:
        found = list_replicas(_store(store))
        now = datetime.now(UTC)
        if as_json:
            rows = [
                {
                    "replica_id": r.replica_id,
                    "kind": r.kind,
                    "host": r.host,
                    "pid": r.pid,
                    "version": r.version,
                    "started_at": r.started_at.isoformat(),
                    "last_seen_at": r.last_seen_at.isoformat(),
                    "switches_read_at": r.switches_read_at and r.switches_read_at.isoformat(),
                    "live": r.live(now, live_s),
                }
                for r in found
            ]
            typer.echo(json.dumps({"live_s": live_s, "items": rows}, indent=2))
            return
        table = Table("replica", "kind", "host:pid", "version", "live", "last seen", "switches read")
        for r in found:
            table.add_row(
                r.replica_id,
                r.kind,
                r.label,
                r.version,
                "yes" if r.live(now, live_s) else "[red]no[/red]",
                f"{(now - r.last_seen_at).total_seconds():.1f} s ago",
                "never"
                if r.switches_read_at is None
                else f"{(now - r.switches_read_at).total_seconds():.1f} s ago",
            )
        out.print(table)
        live = sum(r.live(now, live_s) for r in found)
        out.print(f"{live} live of {len(found)} registered (live: seen within {live_s:g} s)")

    guard(body)


def main() -> None:
    app()
