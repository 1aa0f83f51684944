"""``warden replay`` (recorded calls re-decided under a candidate spec) and ``warden diff``
(what changed between two specs).

Exit codes: 0 done (with ``--fail-on-change``: and nothing changed), 1 a decision changed
under ``--fail-on-change`` or a call could not be replayed, 2 a usage error (one line).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from warden.cli._common import StoreOpt, err, out
from warden.errors import SpecError, WardenError

USAGE = 2


def _usage(message: str) -> typer.Exit:
    err.print(f"[red]error[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(USAGE)


def _load(path: Path) -> Any:
    from warden.spec import load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {escape(str(issue))}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE) from None
    except OSError as exc:
        raise _usage(f"{path}: {exc.strerror}") from None


def _open_store(url: str | None) -> Any:
    """The store, read-only in intent: never created or migrated here; a missing SQLite
    file, an unreachable database or an old schema is a usage error (one line)."""
    from sqlalchemy.exc import SQLAlchemyError

    from warden.store import Store, default_store_url
    from warden.store._migrate import display_url

    url = url or default_store_url()
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path != ":memory:" and not Path(path).exists():
            raise _usage(f"no store at {path}; pass --store URL")
    try:
        store = Store(url, create=False)
    except WardenError as exc:
        raise _usage(str(exc)) from None
    try:
        store.check_schema()
    except (WardenError, SQLAlchemyError) as exc:
        store.dispose()
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _usage(f"cannot read the store {display_url(url)}: {detail}") from None
    return store


def _short(args: Any, limit: int = 160) -> str:
    """A call's arguments on one line, cut at ``limit`` characters (``--json`` has all)."""
    text = json.dumps(args, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _usage(f"--since {text!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        raise _usage(f"--since {text!r} has no timezone: write it in UTC, e.g. {text}Z")
    return moment


def replay_cmd(
    spec: Annotated[
        Path | None,
        typer.Option(
            help="The candidate workflow spec the calls are re-decided under (with "
            "--sandbox: default the suite's)."
        ),
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="Replay this run's calls.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Replay every call recorded at or after this time (ISO 8601, UTC)."),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="With --since: only this tenant's calls.")
    ] = None,
    tools: Annotated[
        str | None,
        typer.Option(
            help="MOD:ATTR (or file.py:ATTR) of the tool functions (a list), for tools whose "
            "effect class the spec leaves to the implementation."
        ),
    ] = None,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox",
            help="Re-run the run's calls, in order, against a fresh sandbox of --suite's "
            "environment through a new gateway, and report where outcomes differ.",
        ),
    ] = False,
    suite: Annotated[
        Path | None, typer.Option(help="With --sandbox: the eval suite whose environment to use.")
    ] = None,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    fail_on_change: Annotated[
        bool,
        typer.Option(
            "--fail-on-change",
            help="Exit 1 when a decision changes or a call cannot be replayed (for CI).",
        ),
    ] = False,
) -> None:
    """Re-decide recorded calls under a candidate spec, executing nothing and writing
    nothing: the facts as recorded, windows rebuilt from recorded history. Lists every
    decision that would change (old effect and rules -> new ones, and why) and every call
    that cannot be replayed (and why)."""
    from warden.evals._replay import replay

    if (run is None) == (since is None):
        raise _usage("give exactly one of --run ID or --since TIME")
    loaded = None if spec is None else _load(spec)
    if sandbox:
        if run is None or suite is None:
            raise _usage("--sandbox needs --run ID and --suite SUITE")
        _sandbox(store, run, suite, loaded, as_json)
        return
    if loaded is None:
        raise _usage("give the candidate spec: --spec FILE")
    tool_fns: list[Any] | None = None
    try:
        if tools is not None:
            from warden.evals import load_ref

            found = load_ref(tools, Path.cwd())
            tool_fns = list(found) if isinstance(found, list | tuple) else None
            if tool_fns is None:
                raise WardenError(f"--tools {tools}: not a list of tool functions")
        st = _open_store(store)
        try:
            report = replay(
                st,
                loaded,
                run_id=run,
                since=None if since is None else _since(since),
                tenant=tenant,
                tools=tool_fns,
            )
        finally:
            st.dispose()
    except SpecError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {escape(str(issue))}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE) from None
    except WardenError as exc:
        raise _usage(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False, default=str))
    else:
        c = report.counts
        out.print(
            f"replayed {len(report.calls)} calls under {escape(report.spec)} (policy "
            f"{report.policy_fingerprint[:12]}): {c['changed']} changed, {c['same']} same, "
            f"{c['not_replayable']} not replayable, {c['not_decided']} refused before the policy",
            highlight=False,
            soft_wrap=True,
        )
        for call in report.of("changed"):
            out.print(
                f"[yellow]changed[/yellow] {call.action_id} {call.tool} "
                f"{escape(_short(call.args))}: {call.old_effect} "
                f"{list(call.old_rules)} -> {call.new_effect} {list(call.new_rules)}"
                + (f" ({escape('; '.join(call.why))})" if call.why else ""),
                highlight=False,
                soft_wrap=True,
            )
        for call in report.of("not_replayable"):
            out.print(
                f"[red]not replayable[/red] {call.action_id} {call.tool}: "
                f"{escape('; '.join(call.why))}",
                highlight=False,
                soft_wrap=True,
            )
    if fail_on_change and (report.of("changed") or report.of("not_replayable")):
        raise typer.Exit(1)


def _sandbox(url: str | None, run: str, suite: Path, loaded: Any, as_json: bool) -> None:
    from warden.evals._sandbox import sandbox_replay

    try:
        st = _open_store(url)
        try:
            report = sandbox_replay(st, run, suite, spec=loaded)
        finally:
            st.dispose()
    except SpecError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {escape(str(issue))}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE) from None
    except WardenError as exc:
        raise _usage(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False, default=str))
        return
    out.print(
        f"re-ran {len(report.steps)} calls of run {run} in a sandbox of {suite.name}: "
        f"{sum(1 for s in report.steps if s.differs)} differ",
        highlight=False,
        soft_wrap=True,
    )
    for s in report.steps:
        if s.differs:
            out.print(
                f"[yellow]differs[/yellow] step {s.step} {s.tool}: recorded {s.recorded} -> now {s.now}",
                highlight=False,
                soft_wrap=True,
            )


def diff_cmd(
    old: Annotated[Path, typer.Argument(help="The current spec.", show_default=False)],
    new: Annotated[Path, typer.Argument(help="The candidate spec.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the diff as JSON.")] = False,
) -> None:
    """Show what changed from OLD to NEW in tools (added, removed, effect, schemas) and
    policies (rules added, removed, changed condition, effect or reason), and in the
    facts, windows and variables rules read."""
    from warden.evals._diff import diff_specs

    a, b = _load(old), _load(new)
    try:
        result = diff_specs(a, b)
    except SpecError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {escape(str(issue))}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return
    if result.empty:
        out.print("no changes in tools, policies, facts, windows or variables", highlight=False)
        return
    for name, section in result.sections().items():
        for added in section.added:
            out.print(f"[green]+ {name[:-1] if name != 'policies' else 'rule'} {added}[/green]", highlight=False)
        for removed in section.removed:
            out.print(f"[red]- {name[:-1] if name != 'policies' else 'rule'} {removed}[/red]", highlight=False)
        for item, fields in section.changed.items():
            label = name[:-1] if name != "policies" else "rule"
            out.print(f"[yellow]~ {label} {item}[/yellow]", highlight=False)
            for key, change in fields.items():
                out.print(
                    f"    {key}: {escape(json.dumps(change['old']))} -> {escape(json.dumps(change['new']))}",
                    highlight=False,
                    soft_wrap=True,
                )


def import_approvals_cmd(
    since: Annotated[
        str, typer.Option(help="Approvals decided at or after this time (ISO 8601, UTC).")
    ],
    out_file: Annotated[
        Path, typer.Option("--out", help="The cases file to write (YAML), for a suite's include:.")
    ],
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's approvals.")] = None,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the cases as JSON too.")] = False,
) -> None:
    """Export decided approvals (with approver edits) as labelled eval cases: the call as
    proposed, and the expected decision what the human decided (approved: allow,
    rejected: deny, edited: the proposal denied and the edited call allowed)."""
    from warden.evals._approvals import approval_cases, write_cases

    moment = _since(since)
    try:
        st = _open_store(store)
        try:
            cases = approval_cases(st, moment, tenant=tenant)
        finally:
            st.dispose()
        write_cases(cases, out_file)
    except WardenError as exc:
        raise _usage(str(exc)) from None
    except OSError as exc:
        raise _usage(f"{exc.filename}: {exc.strerror}") from None
    if as_json:
        typer.echo(json.dumps(cases, indent=2, ensure_ascii=False))
    else:
        verdicts = [c["tags"][1] for c in cases]
        out.print(
            f"wrote {len(cases)} cases to {escape(str(out_file))} ("
            + ", ".join(f"{verdicts.count(v)} {v}" for v in ("approved", "rejected", "edited"))
            + ")",
            highlight=False,
            soft_wrap=True,
        )
