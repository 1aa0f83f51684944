"""``warden replay --run ID --sandbox --suite SUITE``: reproduce a recorded run.

The run's calls (tool, arguments, idempotency key, in their recorded order) are made again
through a fresh gateway, on a fresh store, against the suite's environment reset to the
suite's fixtures plus those of the case the run was (its task is the case id, as the
eval runner opens runs; ``case=`` picks another). Each call's outcome (executed, denied,
failed, pending approval, drafted; the policy's decision and the refusal's kind) is
compared with the recorded one, step by step. Approvals are not decided: a call that
waited for one waits again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warden.errors import UsageError
from warden.evals._env import Environment, close_environment
from warden.evals._runner import EvalRunner, load_ref
from warden.evals._scenario import Case, load_suite
from warden.evals._trial import Action, Trial, read_actions
from warden.ledger import iter_events
from warden.spec import LoadedSpec, load_spec
from warden.store import Store

__all__ = ["SandboxReport", "SandboxStep", "sandbox_replay"]


@dataclass(frozen=True, slots=True)
class SandboxStep:
    step: int
    tool: str
    args: Any
    #: "outcome decision kind" as recorded and as re-run
    recorded: str
    now: str

    @property
    def differs(self) -> bool:
        return self.recorded != self.now

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tool": self.tool,
            "args": self.args,
            "recorded": self.recorded,
            "now": self.now,
            "differs": self.differs,
        }


@dataclass(frozen=True, slots=True)
class SandboxReport:
    run_id: str
    case: str | None
    steps: tuple[SandboxStep, ...]
    #: the state changes of the re-run, by collection
    diff: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "case": self.case,
            "differs": sum(1 for s in self.steps if s.differs),
            "steps": [s.to_json() for s in self.steps],
            "diff": self.diff,
        }


def _outcome(action: Action | None) -> str:
    if action is None:
        return "not made"
    parts = [action.outcome]
    if action.decision is not None:
        parts.append(action.decision)
    if action.kind is not None:
        parts.append(action.kind)
    return " ".join(parts)


def sandbox_replay(
    store: Store,
    run_id: str,
    suite_path: str | Path,
    *,
    spec: LoadedSpec | None = None,
    case: str | None = None,
) -> SandboxReport:
    """Re-run run ``run_id``'s calls in a sandbox of ``suite_path``'s environment."""
    suite = load_suite(suite_path)
    loaded = spec or load_spec(suite.resolve(suite.file.spec))
    recorded = Trial(case or "", 0, run_id)
    events = [e.event for e in iter_events(store, run_id=run_id)]
    if not events:
        raise UsageError(f"no run {run_id!r} in the store")
    effects = {
        name: t.effect for name, t in loaded.spec.tools.items() if t.effect is not None
    }
    read_actions(recorded, events, effects)
    task = next((getattr(e, "task", None) for e in events if e.type == "run_started"), None)
    wanted = case or task
    found = next((c for c in suite.cases if c.id == wanted), None)
    if case is not None and found is None:
        raise UsageError(f"suite {suite.name!r} has no case {case!r}")
    the_case = found or Case(id="replayed-run", task_type=_task_type(events))
    calls = [(a.tool, a.args, _key(events, a.action_id)) for a in recorded.actions]

    async def agent(_case: Case, run: Any) -> None:
        for tool, args, key in calls:
            await run.call(tool, args, idempotency_key=key)

    if suite.file.environment is None:
        raise UsageError(f"suite {suite.name!r} names no 'environment:' (MOD:FUNC)")
    factory = load_ref(suite.file.environment, suite.directory)
    try:
        env = factory() if callable(factory) else factory
    except Exception as exc:
        raise UsageError(
            f"the environment {suite.file.environment!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        if not isinstance(env, Environment):
            raise UsageError(f"{suite.file.environment!r} did not give an Environment")
        runner = EvalRunner(suite, spec=loaded, environment=env, agent=agent)
        try:
            result = asyncio.run(runner.run_trial(the_case, 0))
        finally:
            runner.close()
    finally:
        close_environment(env)
    now = result.trial.actions
    steps = tuple(
        SandboxStep(
            i + 1,
            a.tool,
            a.args,
            _outcome(a),
            _outcome(now[i] if i < len(now) else None),
        )
        for i, a in enumerate(recorded.actions)
    )
    diff = {
        name: {
            "inserted": list(d.inserted),
            "deleted": list(d.deleted),
            "updated": sorted(d.updated),
        }
        for name, d in result.trial.diff.items()
    }
    return SandboxReport(run_id, found.id if found else None, steps, diff)


def _key(events: list[Any], action_id: str) -> str | None:
    for e in events:
        if e.type == "action_requested" and e.action_id == action_id:
            key: str | None = e.idempotency_key
            return key
    return None


def _task_type(events: list[Any]) -> str | None:
    for e in events:
        if e.type == "run_started":
            value: str | None = e.task_type
            return value
    return None
