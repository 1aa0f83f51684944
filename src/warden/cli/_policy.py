"""``warden policy test``: run policy test fixtures; ``warden explain``: a recorded decision,
rule by rule.

``policy test`` exits 0 when every case passes, 1 when some case fails (or cannot be
run as written), 2 when the input is unusable (a file that is not a fixture, a spec that
is missing or does not load). ``explain`` exits 1 with one line when the run, the step or
its decision cannot be found.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from warden.cli._common import StoreOpt, err, guard, out
from warden.errors import SpecError, UsageError, WardenError

policy_app = typer.Typer(
    help="Policies as code: test them against fixtures.",
    no_args_is_help=True,
)


@policy_app.command("test")
def policy_test(
    target: Annotated[
        Path,
        typer.Argument(
            help="A directory of policy test files (*.yaml, searched recursively) or one file.",
            show_default=False,
        ),
    ],
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write the results as JUnit XML here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List passing cases too.")
    ] = False,
) -> None:
    """Decide each case of each fixture with the spec's compiled rules and compare with what
    it expects: exit 0 if all pass, 1 on failures, 2 on unusable input."""
    from warden.policy._fixtures import fixture_files, run_fixtures

    try:
        report = run_fixtures(fixture_files(target))
    except SpecError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {escape(str(issue))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except WardenError as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if junit is not None:
        try:
            junit.write_text(report.to_junit(), encoding="utf-8")
        except OSError as exc:
            err.print(f"[red]error[/red] cannot write {junit}: {exc.strerror}", highlight=False)
            raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        for result in report.results:
            if result.status == "passed":
                if verbose:
                    out.print(
                        f"[green]PASS[/green] {escape(result.where)}: {escape(result.name)}",
                        highlight=False,
                        soft_wrap=True,
                    )
                continue
            label = "[red]FAIL[/red]" if result.status == "failed" else "[red]ERROR[/red]"
            out.print(
                f"{label} {escape(result.where)}: {escape(result.name)}: {escape(result.message or '')}",
                highlight=False,
                soft_wrap=True,
            )
        colour = "green" if report.ok else "red"
        out.print(f"[{colour}]{report.summary}[/{colour}]", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def explain(
    run_id: Annotated[str, typer.Argument(help="The run (run_...).", show_default=False)],
    step: Annotated[int, typer.Argument(help="The step of the run (1 for its first call).", min=1)],
    spec: Annotated[
        Path,
        typer.Option(
            "--spec", help="The workflow spec to explain the decision with.", show_default=False
        ),
    ],
    store: StoreOpt = None,
    tools: Annotated[
        str | None,
        typer.Option(
            "--tools",
            help="module:function or file.py:function returning the tools (as for `warden "
            "serve`): their effect and schema instead of the spec's declarations alone.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
) -> None:
    """Explain one recorded decision: every rule considered for the tool, whether it matched,
    the values it read; and whether the spec's rules still decide the same."""
    from warden.cli._ledger import open_store
    from warden.ledger import iter_events
    from warden.policy import Policy
    from warden.policy._explain import RecordedStep, explain_step, tool_context_from_spec
    from warden.spec import load_spec

    def body() -> None:
        loaded = load_spec(spec)
        policy = Policy(loaded)
        with open_store(store) as st:
            recorded = RecordedStep.from_events(run_id, step, iter_events(st, run_id=run_id))
        if recorded.workflow != loaded.spec.name:
            raise UsageError(
                f"run {run_id} is of workflow {recorded.workflow!r}; {spec} defines "
                f"{loaded.spec.name!r}: pass that workflow's spec"
            )
        args: Any = None
        if tools is None:
            context, effect = tool_context_from_spec(loaded, recorded.tool)
        else:
            context, effect, args = _from_tools(loaded, tools, recorded.tool, recorded.args)
        result = explain_step(policy, recorded, context, effect, args)
        if as_json:
            typer.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
            return
        ex = result.explanation
        out.print(
            f"run {run_id} step {step}: [bold]{escape(ex.tool)}[/bold] "
            f"({ex.effect_class.value}), tier {ex.tier.value}, tenant {escape(recorded.tenant)}",
            highlight=False,
        )
        table = Table()
        table.add_column("rule", overflow="fold")
        table.add_column("effect")
        table.add_column("matched")
        table.add_column("values read", overflow="fold")
        for rule in ex.rules:
            shown = {"true": "[bold]true[/bold]", "false": "false", "error": "[red]error[/red]"}
            values = "\n".join(escape(v.shown(limit=80)) for v in rule.values)
            if rule.error:
                values += f"\n[red]{escape(rule.error)}[/red]"
            table.add_row(escape(rule.name), rule.effect, shown[rule.outcome], values)
        if ex.rules:
            out.print(table)
        else:
            out.print("no rule is considered for this tool: the safe default decides")
        now, then = ex.decision, recorded.decision
        out.print(
            f"decision now: [bold]{now.effect.value}[/bold]"
            f" by {escape(', '.join(now.rules) or 'no rule')}; "
            f"recorded: {then.effect} by {escape(', '.join(then.rules) or 'no rule')}",
            highlight=False,
        )
        colour = "green" if not result.differences and not result.spec_changed else "yellow"
        out.print(f"[{colour}]{escape(result.verdict)}[/{colour}]", highlight=False, soft_wrap=True)

    guard(body)


def _from_tools(loaded: Any, ref: str, tool: str, args: Any) -> tuple[dict[str, Any], Any, Any]:
    """The tool context, effect class and validated arguments from the implementations."""
    from warden.pipeline._services import _tool_context
    from warden.pipeline.stages._base import plain
    from warden.tools import SchemaViolation, ToolRegistry
    from warden.tools._factory import load_factory

    registry = ToolRegistry.build(loaded, load_factory(ref)())
    found = registry.get(tool)
    if found is None:
        raise UsageError(f"tool {tool!r} is not declared in {loaded.file}")
    validated = None
    if found.input is not None and isinstance(args, dict):
        try:
            validated = plain(found.input.validate(args))
        except SchemaViolation:
            validated = None  # the recorded arguments as they were
    return _tool_context(found), found.effect, validated
