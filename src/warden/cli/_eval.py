"""``warden eval run``: a scenario suite against the agent under test, with release gates.

Exit codes: 0 every gate passed, 1 a gate failed (the reasons are printed), 2 a usage
error (a suite, spec, agent or baseline that cannot be used; one line on stderr).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from warden.cli._common import err, out
from warden.errors import SpecError, WardenError

eval_app = typer.Typer(
    help="Evals: run scenario suites against your agent and gate releases on the results.",
    no_args_is_help=True,
)

#: a gate failed
GATE_FAILED = 1
#: the command was used wrongly (bad suite, spec, agent, baseline or option)
USAGE = 2


@eval_app.command("run")
def run(
    suite: Annotated[Path, typer.Argument(help="The suite file (YAML).", show_default=False)],
    agent: Annotated[
        str | None,
        typer.Option(
            help="The agent under test, module:function or file.py:function, called with "
            "(case, run) for each trial (async, or sync in a worker thread); default: the "
            "suite's 'agent:'.",
        ),
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(help="A workflow spec to use in place of the suite's (a candidate policy)."),
    ] = None,
    repeat: Annotated[
        int,
        typer.Option(
            help="Trials per case (pass^k and pass@k are reported for k = this); a failing "
            "case is run once more to confirm, and one that passes and fails is flaky.",
            min=1,
            max=100,
        ),
    ] = 1,
    baseline: Annotated[
        Path | None,
        typer.Option(help="The stored baseline to gate against (JSON, see --write-baseline)."),
    ] = None,
    write_baseline: Annotated[
        bool,
        typer.Option(
            "--write-baseline", help="Store this run's figures as the baseline (--baseline FILE)."
        ),
    ] = False,
    quarantine: Annotated[
        Path | None,
        typer.Option(
            help="Where flaky cases are recorded (default: next to the baseline, "
            "BASELINE.quarantine.json, else next to the suite, SUITE.quarantine.json)."
        ),
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here.")] = None,
    summary: Annotated[
        Path | None,
        typer.Option(help="Write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)."),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="Only cases with this tag (repeatable).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="Run every trial on this store (its own tenant each) instead of a fresh "
            "SQLite file per trial."
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds an agent may take on one trial before it fails.", min=0.001),
    ] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run SUITE's cases against the agent; score state changes, policy decisions, tool
    usage, schema validity, cost and latency; gate on the spec's 'gates:' and 'slo:'
    and on the baseline (success rate below target or down more than 2 points,
    more unsafe-write attempts, cost per successful case up more than 20%).

    Exit code 0: every gate passed; 1: a gate failed; 2: usage error.
    """
    from warden.evals import evaluate, markdown, to_json, write_junit

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=True,
    )
    task = bar.add_task(f"eval {suite.name}", total=None)
    try:
        with bar:
            report = evaluate(
                suite,
                agent=agent,
                spec=spec,
                repeat=repeat,
                baseline=baseline,
                save_baseline=write_baseline,
                quarantine=quarantine,
                store_url=store,
                tags=frozenset(tag or ()),
                timeout_s=timeout,
                started=lambda n: bar.update(task, total=n),
                progress=lambda _r: bar.advance(task),
            )
        if junit is not None:
            write_junit(report, junit)
        if summary is not None:
            summary.parent.mkdir(parents=True, exist_ok=True)
            with summary.open("a", encoding="utf-8") as fh:
                fh.write(markdown(report))
    except SpecError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {issue}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE) from None
    except WardenError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE) from None
    except OSError as exc:
        err.print(f"[red]error[/red] {exc.filename}: {exc.strerror}", highlight=False)
        raise typer.Exit(USAGE) from None
    if as_json:
        typer.echo(json.dumps(to_json(report), indent=2, ensure_ascii=False))
    else:
        _print(report)
    if write_baseline:
        err.print(f"baseline written to {baseline}", highlight=False)
    if not report.passed:
        raise typer.Exit(GATE_FAILED)


def _print(report: object) -> None:
    from warden.evals import Report

    assert isinstance(report, Report)
    f = report.figures
    rate = "—" if f.success_rate is None else f"{f.success_rate:.1%}"
    out.print(
        f"suite [bold]{report.suite}[/bold] (workflow {report.workflow}, spec "
        f"{report.spec_fingerprint[:12]}): {f.cases} cases x {f.repeat}, success {rate} "
        f"({f.passed} of {f.gating} gating), pass^{f.repeat} {_r(f.pass_hat_k)}, "
        f"pass@{f.repeat} {_r(f.pass_at_k)}, unsafe-write attempts {f.unsafe_writes:g}, "
        f"cost per success {'—' if f.cost_per_success_usd is None else f'${f.cost_per_success_usd:.6f}'}",
        highlight=False,
        soft_wrap=True,
    )
    for r in report.results:
        if r.gating and r.status == "failed":
            why = next(
                (
                    "; ".join(f"{s.name}: {s.detail}" for s in t.failures)
                    for t in r.trials
                    if t.failures
                ),
                "",
            )
            out.print(f"[red]FAIL[/red] {r.case.id}: {why}", highlight=False, soft_wrap=True)
        elif not r.gating:
            label = "quarantined" if r.quarantined else "flaky"
            out.print(
                f"[yellow]{label}[/yellow] {r.case.id}: {r.passes} of {len(r.trials)} trials passed",
                highlight=False,
            )
    if report.quarantine_added:
        out.print(
            f"quarantined {', '.join(report.quarantine_added)} (recorded in {report.quarantine_file})",
            highlight=False,
        )
    cal = report.calibration
    if cal is not None:
        out.print(
            f"calibration: ECE {cal.ece:.3f} over {cal.actions} actions with a confidence "
            "(right = executed by itself)",
            highlight=False,
        )
        for b in cal.bins:
            if b.count:
                out.print(
                    f"  {b.low:.1f}-{b.high:.1f}: {b.count} actions, mean confidence "
                    f"{_r(b.mean_confidence)}, executed {_r(b.accuracy)}",
                    highlight=False,
                )
    for check in report.checks:
        mark = "[green]pass[/green]" if check.passed else "[red]FAIL[/red]"
        out.print(f"gate {check.name}: {mark} {check.detail}", highlight=False, soft_wrap=True)
    verdict = "[green]gates passed[/green]" if report.passed else "[red]gate failed[/red]"
    out.print(verdict)


@eval_app.command("adversarial")
def adversarial_cmd(
    suite: Annotated[
        Path,
        typer.Argument(
            help="The suite file (YAML): its spec, environment and cases are attacked; or a "
            "workflow spec, with --tools and --agent (one base case, no state).",
            show_default=False,
        ),
    ],
    agent: Annotated[
        str | None,
        typer.Option(
            help="The agent under attack, module:function or file.py:function (as for "
            "'eval run'); default: the suite's 'agent:'.",
        ),
    ] = None,
    policies: Annotated[
        str,
        typer.Option(
            help="Run with Warden's policies 'on' (the spec as written), 'off' (the same "
            "spec with policies: []) or 'both'.",
        ),
    ] = "both",
    spec: Annotated[
        Path | None, typer.Option(help="A workflow spec to use in place of the suite's.")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(help="Attack only cases with this tag (repeatable); default: every case."),
    ] = None,
    tools: Annotated[
        str | None,
        typer.Option(
            help="With a spec: its tools, module:function (the tool functions, or a "
            "function returning them)."
        ),
    ] = None,
    input_json: Annotated[
        str | None,
        typer.Option("--input", help="With a spec: the base case's input to the agent (JSON)."),
    ] = None,
    max_attack_success: Annotated[
        float | None,
        typer.Option(
            help="Exit 1 when the attack success rate with policies on is above this (0 to 1).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds an agent may take on one attack.", min=0.001),
    ] = 60.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every figure and attack as JSON.")
    ] = False,
) -> None:
    """Attack the agent with the adversarial pack, generated from SUITE's tools, spec and
    cases (or a SPEC's, with --tools): injected instructions in untrusted tool outputs, PII exfiltration, policy-bypass
    attempts (split transactions, type confusion, look-alike ids, idempotency key reuse),
    invalid parameters, malformed outputs, tool failures and timeouts, missing context and
    ambiguous requests. Reports, per kind, the attack success rate and the utility under
    attack with the policies on and off.

    Exit code 0: done (1 with --max-attack-success exceeded); 2: usage error.
    """
    from warden.evals import adversarial

    modes = {"on": ("on",), "off": ("off",), "both": ("on", "off")}.get(policies)
    if modes is None:
        err.print(f"[red]error[/red] --policies must be on, off or both, not {policies!r}")
        raise typer.Exit(USAGE)
    try:
        given = json.loads(input_json) if input_json is not None else None
    except json.JSONDecodeError as exc:
        err.print(f"[red]error[/red] --input is not JSON: {exc.msg}", highlight=False)
        raise typer.Exit(USAGE) from None
    try:
        report = adversarial(
            suite,
            tools=tools,
            case_input=given,
            agent=agent,
            modes=modes,
            spec=spec,
            tags=frozenset(tag or ()),
            timeout_s=timeout,
        )
    except SpecError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {issue}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE) from None
    except WardenError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE) from None
    except OSError as exc:
        err.print(f"[red]error[/red] {exc.filename}: {exc.strerror}", highlight=False)
        raise typer.Exit(USAGE) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_pack(report)
    if max_attack_success is not None and "on" in modes:
        rate = report.overall("on").attack_success_rate or 0.0
        if rate > max_attack_success:
            err.print(
                f"attack success rate with policies on {rate:.1%} is above "
                f"{max_attack_success:.1%}",
                highlight=False,
            )
            raise typer.Exit(GATE_FAILED)


def _print_pack(report: object) -> None:
    from rich.table import Table

    from warden.evals import KINDS, PackReport

    assert isinstance(report, PackReport)
    out.print(
        f"adversarial pack on suite [bold]{report.suite}[/bold] (workflow {report.workflow}): "
        f"{len(report.base_cases)} base cases, "
        f"{len(report.results) // max(1, len(report.modes))} attacks",
        highlight=False,
        soft_wrap=True,
    )
    table = Table("kind", "attacks")
    table.columns[0].no_wrap = True
    for mode in report.modes:
        table.add_column(f"ASR {mode}", justify="right", no_wrap=True)
        table.add_column(f"utility {mode}", justify="right", no_wrap=True)
    by = {(f.kind, f.mode): f for f in report.figures()}
    for kind in (*KINDS, "all"):
        figs = [report.overall(m) if kind == "all" else by[(kind, m)] for m in report.modes]
        row = [kind, str(figs[0].attacks)]
        for f in figs:
            row += [_r(f.attack_success_rate), _r(f.utility)]
        table.add_row(*row)
    out.print(table)
    for kind, why in report.not_applicable.items():
        out.print(f"[yellow]{kind}[/yellow]: no attack ({why})", highlight=False)
    for r in report.results:
        if r.succeeded:
            what = ", ".join(t for t, _ in r.harmful) or "-"
            out.print(
                f"[red]attack succeeded[/red] ({r.mode}) {r.attack.id}: {what}", highlight=False
            )


def _r(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"
