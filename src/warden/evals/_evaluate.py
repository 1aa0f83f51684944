"""One call for a whole evaluation (what ``warden eval run`` does): load the suite, its
spec, environment, agent and scorers; run every case; update the quarantine; compute
the figures; check the gates against the spec and the baseline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from warden.errors import UsageError
from warden.evals._calibration import calibration
from warden.evals._env import Environment, close_environment
from warden.evals._gate import Baseline, Quarantine, figures, gate, quarantine_path, write_baseline
from warden.evals._report import Report
from warden.evals._runner import CaseResult, EvalRunner, load_ref
from warden.evals._scenario import load_suite
from warden.evals._scorers import Scorer
from warden.spec import load_spec


def evaluate(
    suite_path: str | Path,
    *,
    agent: str | Any | None = None,
    spec: str | Path | None = None,
    repeat: int = 1,
    baseline: Path | None = None,
    save_baseline: bool = False,
    quarantine: Path | None = None,
    store_url: str | None = None,
    tags: frozenset[str] = frozenset(),
    timeout_s: float | None = 300.0,
    started: Callable[[int], None] | None = None,
    progress: Callable[[CaseResult], None] | None = None,
) -> Report:
    """``agent``: ``MOD:FUNC`` (or the function itself), else the suite's ``agent:``;
    ``spec``: a spec file in place of the suite's (a candidate policy); ``tags``: only
    cases with one of these tags. ``UsageError`` for anything given wrongly."""
    if repeat < 1:
        raise UsageError("--repeat must be at least 1")
    if save_baseline and baseline is None:
        raise UsageError("--write-baseline needs --baseline FILE")
    suite = load_suite(suite_path)
    loaded = load_spec(Path(spec) if spec is not None else suite.resolve(suite.file.spec))
    ref = agent if agent is not None else suite.file.agent
    if ref is None:
        raise UsageError("no agent under test: pass --agent MOD:FUNC or set 'agent:' in the suite")
    fn = (
        load_ref(ref, Path.cwd() if agent is not None else suite.directory)
        if isinstance(ref, str)
        else ref
    )
    if not callable(fn):
        raise UsageError(f"the agent {ref!r} is not a function")
    if suite.file.environment is None:
        raise UsageError(f"suite {suite.name!r} names no 'environment:' (MOD:FUNC)")
    scorers: list[Scorer] = []
    for scorer_ref in suite.file.scorers:
        found = load_ref(scorer_ref, suite.directory)
        if not callable(found):
            raise UsageError(f"the scorer {scorer_ref!r} is not a function")
        scorers.append(found)
    cases = [c for c in suite.cases if not tags or tags & set(c.tags)]
    if not cases:
        raise UsageError(f"suite {suite.name!r} has no case" + (" with those tags" if tags else ""))
    held = Quarantine.read(quarantine_path(baseline, suite.path, quarantine))
    before = Baseline.read(baseline) if baseline is not None and not save_baseline else None
    factory = load_ref(suite.file.environment, suite.directory)
    try:
        env = factory() if callable(factory) else factory
    except Exception as exc:
        raise UsageError(
            f"the environment {suite.file.environment!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        if not isinstance(env, Environment):
            raise UsageError(
                f"{suite.file.environment!r} did not give an Environment (reset, snapshot, tools)"
            )
        runner = EvalRunner(
            suite,
            spec=loaded,
            environment=env,
            agent=fn,
            scorers=scorers,
            store_url=store_url,
            timeout_s=timeout_s,
        )
        try:
            if started is not None:
                started(len(cases))
            results = asyncio.run(
                runner.run(repeat=repeat, quarantined=held.entries, cases=cases, progress=progress)
            )
        finally:
            runner.close()
    finally:
        close_environment(env)
    added, released = held.update(results)
    if added or released or held.path.exists():
        held.write()
    figs = figures(results, repeat)
    if save_baseline and baseline is not None:
        write_baseline(baseline, suite.name, loaded, figs, results)
    return Report(
        suite=suite.name,
        workflow=loaded.spec.name,
        spec_fingerprint=loaded.fingerprint,
        figures=figs,
        checks=gate(loaded, figs, before),
        results=results,
        quarantine_file=str(held.path),
        quarantine_added=added,
        quarantine_released=released,
        calibration=calibration(a for r in results for t in r.trials for a in t.trial.actions),
    )
