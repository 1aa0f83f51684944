"""Running a suite: each trial of each case on its own store and a fresh copy of the
environment's state, the agent under test given the case and a governed run, the run's
ledger events read back and scored; failures re-run to confirm, mixed results flaky.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import os
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from warden.errors import UsageError, WardenError
from warden.evals._env import (
    Environment,
    State,
    Tools,
    diff_states,
    merged_fixtures,
    scratch_dir,
)
from warden.evals._scenario import Case, Suite
from warden.evals._scorers import BUILT_IN, Score, Scorer, run_scorers
from warden.evals._trial import Trial, read_actions
from warden.gateway import Gateway, Run, compiled_for
from warden.ledger import iter_events
from warden.policy import Policy
from warden.results import Result
from warden.spec import EffectClass, LoadedSpec
from warden.store import Store
from warden.telemetry import PiiRedactor
from warden.tools import ToolRegistry


def load_ref(ref: str, base: Path | None = None) -> Any:
    """The object ``package.module:name`` or ``path/to/file.py:name`` names (a file path
    relative to ``base``, a module found from ``base`` too, when given); ``UsageError``
    when it cannot be loaded."""
    module_ref, _, attr = ref.rpartition(":")
    if not module_ref or not attr:
        raise UsageError(f"{ref!r} must look like module:function or file.py:function")
    try:
        if module_ref.endswith(".py"):
            path = Path(module_ref)
            if base is not None and not path.is_absolute():
                path = base / path
            path = path.resolve()
            if not path.exists():
                raise UsageError(f"{ref!r}: no file {path}")
            # One module per file, whatever its name: two suites' agent.py do not collide.
            name = f"warden_eval_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    raise UsageError(f"{ref!r}: cannot load {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            # As ``python -m`` would: a module next to the suite (or, for --agent, in the
            # current directory) imports without being installed.
            if base is not None and str(base) not in sys.path:
                sys.path.insert(0, str(base))
            module = importlib.import_module(module_ref)
    except WardenError:
        raise
    except Exception as exc:  # the user's module failed to import: one line
        raise UsageError(f"{ref!r}: cannot import it ({type(exc).__name__}: {exc})") from exc
    found = getattr(module, attr, None)
    if found is None:
        raise UsageError(f"{ref!r}: {module_ref} has no {attr!r}")
    return found


T = TypeVar("T")


class BlockingRun:
    """The run a synchronous agent gets: ``call`` blocks its thread while the governed
    call runs on the runner's event loop."""

    def __init__(self, run: Run, loop: asyncio.AbstractEventLoop) -> None:
        self.run = run
        self._loop = loop

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def call(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        confidence: float | None = None,
        rationale: str | None = None,
    ) -> Result:
        future = asyncio.run_coroutine_threadsafe(
            self.run.call(
                tool,
                args,
                idempotency_key=idempotency_key,
                confidence=confidence,
                rationale=rationale,
            ),
            self._loop,
        )
        return future.result()


#: the agent under test: ``async (case, run) -> output``, or the same without ``async``
#: (it then gets a ``BlockingRun`` and runs in a worker thread)
Agent = Callable[[Case, Any], Awaitable[Any]] | Callable[[Case, Any], Any]


@dataclass
class TrialResult:
    trial: Trial
    scores: list[Score]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.scores)

    @property
    def failures(self) -> list[Score]:
        return [s for s in self.scores if not s.passed]


@dataclass
class CaseResult:
    case: Case
    #: the ``repeat`` trials, then the confirmation trial when one of them failed
    trials: list[TrialResult] = field(default_factory=list)
    repeat: int = 1
    #: listed in the quarantine before this run (reported apart, not gating)
    quarantined: bool = False

    @property
    def passes(self) -> int:
        return sum(t.passed for t in self.trials)

    @property
    def status(self) -> str:
        """passed (every trial), failed (every trial, the confirmation included) or
        flaky (some of each)."""
        if self.passes == len(self.trials):
            return "passed"
        return "failed" if self.passes == 0 else "flaky"

    @property
    def gating(self) -> bool:
        return not self.quarantined and self.status != "flaky"

    @property
    def counted(self) -> list[TrialResult]:
        """The trials the figures are computed over: the ``repeat`` ones."""
        return self.trials[: self.repeat]


class EvalRunner:
    """Runs a suite's cases against one agent, one spec and one environment.

    Each trial gets its own store and gateway: by default a fresh SQLite file copied from
    an empty, migrated one (so cases never see each other's windows, budgets or
    idempotency keys); with ``store_url``, one shared store and a tenant of its own per
    trial (workflow-wide budgets are then shared).
    """

    def __init__(
        self,
        suite: Suite,
        *,
        spec: LoadedSpec,
        environment: Environment,
        agent: Agent,
        identity: str | None = None,
        scorers: Sequence[Scorer] = (),
        store_url: str | None = None,
        workdir: Path | None = None,
        timeout_s: float | None = 300.0,
    ) -> None:
        self.suite = suite
        self.spec = spec
        self.env = environment
        self.agent = agent
        agents = list(spec.spec.agents)
        self.identity = identity or suite.file.identity or (agents[0] if agents else "eval")
        if agents and self.identity not in agents:
            raise UsageError(
                f"identity {self.identity!r} is not an agent of workflow {spec.spec.name!r} "
                f"({', '.join(agents)})"
            )
        self.scorers: list[Scorer] = [*BUILT_IN, *scorers]
        self.store_url = store_url
        #: how long an agent may take on one trial (None: no limit)
        self.timeout_s = timeout_s
        self._own_dir = workdir is None
        self.workdir = workdir or scratch_dir("warden-eval-")
        # The registry and policy of the environment's tools, while it returns the same.
        self._compiled: tuple[Tools, tuple[ToolRegistry, Policy]] | None = None
        self._template: Path | None = None
        self._shared: Store | None = None
        self._trial_store: Store | None = None
        self._effects: dict[str, EffectClass] | None = None

    # -- stores -------------------------------------------------------------------------

    def _store(self) -> tuple[Store, str]:
        """The trial's store and its tenant."""
        if self.store_url is not None:
            if self._shared is None:
                self._shared = Store(self.store_url)
            return self._shared, f"{self.suite.file.tenant}-{uuid.uuid4().hex[:10]}"
        if self._template is None:
            template = self.workdir / "empty-store.db"
            Store(f"sqlite:///{template}").dispose()  # migrated once, copied per trial
            self._template = template
        # Every trial gets a new copy of the empty store at one path, under one Store
        # object: its engine keeps the statements it compiled (measured: ~20 % of the CPU
        # time of a trial of the demo suite went to compiling them again for a new
        # engine). The last trial's gateway disposed of every connection; the copy is a
        # new file (a new inode, with no WAL), so nothing of the last trial can be read.
        path = self.workdir / "trial.db"
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        fresh = self.workdir / "trial.db.new"
        shutil.copyfile(self._template, fresh)
        os.replace(fresh, path)
        if self._trial_store is None:
            # The copy is at the newest revision already: no migration check.
            self._trial_store = Store(f"sqlite:///{path}", create=False)
        return self._trial_store, self.suite.file.tenant

    def close(self) -> None:
        """Release the shared store and the working directory (the environment is its
        maker's to close)."""
        for store in (self._shared, self._trial_store):
            if store is not None:
                store.dispose()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- running ------------------------------------------------------------------------

    async def _call_agent(self, case: Case, run: Run) -> Any:
        agent = self.agent
        # An object with an async __call__ is async too.
        if inspect.iscoroutinefunction(agent) or inspect.iscoroutinefunction(type(agent).__call__):
            return await agent(case, run)
        loop = asyncio.get_running_loop()
        output = await asyncio.to_thread(agent, case, BlockingRun(run, loop))
        if inspect.iscoroutine(output):
            # It was given a BlockingRun, whose calls would block this loop: refuse.
            output.close()
            raise TypeError("a plain function returned a coroutine: declare the agent async def")
        return output

    def _env(self, case: Case, step: str, fn: Callable[[], T]) -> T:
        """``fn()`` of the environment; its failure is a usage error naming the case."""
        try:
            return fn()
        except WardenError as exc:
            raise UsageError(f"case {case.id!r}: the environment's {step}: {exc}") from exc
        except Exception as exc:
            raise UsageError(
                f"case {case.id!r}: the environment's {step} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def run_trial(
        self, case: Case, attempt: int, *, confirmation: bool = False
    ) -> TrialResult:
        fixtures = merged_fixtures(self.suite.file.fixtures, case.fixtures)
        self._env(case, "reset", lambda: self.env.reset(fixtures))
        before: State = self._env(case, "snapshot", self.env.snapshot)
        tools = self._env(case, "tools", self.env.tools)
        if self._compiled is None or self._compiled[0] is not tools:
            self._compiled = (tools, compiled_for(self.spec, tools))
        store, tenant = self._store()
        try:
            gateway = Gateway(self.spec, tools, store=store, compiled=self._compiled[1])
        except BaseException:
            store.dispose()
            raise
        if self._effects is None:
            self._effects = {t.name: t.effect for t in gateway.svc.registry}
        try:
            try:
                run = gateway.open_run(
                    tenant=tenant, agent=self.identity, task=case.id, task_type=case.task_type
                )
            except UsageError as exc:
                raise UsageError(f"case {case.id!r}: {exc}") from exc
            trial = Trial(case.id, attempt, run.run_id, confirmation=confirmation)
            pii = gateway.svc.pii
            if pii is not None:
                trial.record_args = partial(_recorded_args, pii, tenant)
            started = time.perf_counter()
            try:
                trial.output = await asyncio.wait_for(
                    self._call_agent(case, run), timeout=self.timeout_s
                )
            except TimeoutError:
                trial.error = f"the agent did not finish within {self.timeout_s:g} s"
            except Exception as exc:
                trial.error = f"the agent raised {type(exc).__name__}: {exc}"
            trial.latency_ms = (time.perf_counter() - started) * 1000
            run.finish("completed" if trial.error is None else "error")
            gateway.flush()
            read_actions(
                trial, (e.event for e in iter_events(store, run_id=run.run_id)), self._effects
            )
        finally:
            # aclose: the model upstreams' connections belong to this loop; then the
            # store's connections are disposed of too.
            await gateway.aclose()
        trial.diff = diff_states(before, self._env(case, "snapshot", self.env.snapshot))
        return TrialResult(trial, run_scorers(self.scorers, case, trial))

    async def run_case(self, case: Case, repeat: int, *, quarantined: bool = False) -> CaseResult:
        result = CaseResult(case, repeat=repeat, quarantined=quarantined)
        for attempt in range(repeat):
            result.trials.append(await self.run_trial(case, attempt))
        if result.passes < repeat:
            # A failure counts only once a second look confirms it; one that passes
            # then is flaky.
            result.trials.append(await self.run_trial(case, repeat, confirmation=True))
        return result

    async def run(
        self,
        *,
        repeat: int = 1,
        quarantined: Iterable[str] = (),
        cases: Sequence[Case] | None = None,
        progress: Callable[[CaseResult], None] | None = None,
    ) -> list[CaseResult]:
        if repeat < 1:
            raise UsageError("repeat must be at least 1")
        held = set(quarantined)
        results = []
        for case in self.suite.cases if cases is None else cases:
            result = await self.run_case(case, repeat, quarantined=case.id in held)
            results.append(result)
            if progress is not None:
                progress(result)
        return results


def _recorded_args(pii: PiiRedactor, tenant: str, args: Any) -> Any:
    """``args`` as ``action_requested`` records them (PII tokenized, docs/pii.md)."""
    return pii.redact(tenant, {"args": args})["args"]
