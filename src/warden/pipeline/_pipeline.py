"""The governed call: the one place that knows the order of the stages.

    record → switches → caps → tool → identity → schema → replay → serialize → policy
           → approval → draft → idempotency → execute → verify

    a model call (the tool ``model:<name>``):
    record → switches → caps → tool → identity → schema → policy → approval
           → budget → upstream

Each stage wraps the rest (``async (call, next) -> Result``). There is one entry: a call
proposed by an agent and an approved action resumed later both go through every stage from
the top, so a kill switch, a closed run or a lost scope stops an action approved an hour
ago as it stops a new one. Every call ends in exactly one terminal ledger event (executed,
drafted, denied or failed) or in ``approval_requested``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol, runtime_checkable

from warden.approvals import ApprovalRecord, ApprovalWaiter
from warden.pipeline._call import Call, RunState
from warden.pipeline._services import Services
from warden.pipeline.stages import (
    ApprovalStage,
    CapsStage,
    DraftStage,
    ExecuteStage,
    IdempotencyStage,
    IdentityStage,
    Next,
    PolicyStage,
    RecordStage,
    ReplayStage,
    SchemaStage,
    SerializeStage,
    Stage,
    SwitchStage,
    ToolStage,
    VerifyStage,
    outcome_of_approval,
)
from warden.pipeline.stages._model import BudgetStage, UpstreamStage
from warden.results import Pending, Result
from warden.tools import ToolDef

PENDING = frozenset({"pending"})
#: states after which an approved action's outcome is known
UNSETTLED = frozenset({"pending", "approved", "executing"})


async def _end(call: Call) -> Result:  # pragma: no cover - VerifyStage never calls next
    raise AssertionError("the innermost stage must return a result")


@runtime_checkable
class StageObserver(Protocol):
    """Told how long each stage of a call took (telemetry: stage spans and histograms).

    Installed with ``Pipeline.observe``; without one the chain is the bare stages, so it
    costs nothing when telemetry is off. With one, a governed read costs ~1.5 µs more per
    stage timed (the call as a whole, ``policy``, ``execute``): measured.
    """

    def call_done(
        self, call: Call, result: Result | None, marks: list[tuple[str | None, int]]
    ) -> None:
        """The call left the pipeline (after its terminal event) with ``result`` (None: it
        raised). ``marks``: in order, ``(stage, perf_counter_ns)`` as each stage of
        ``OBSERVED`` was entered (the first: ``other``, the whole call) and ``(None, ns)``
        as the innermost open one returned."""

    def approval_waited(self, run: RunState, pending: Pending, start_ns: int, end_ns: int) -> None:
        """The pipeline waited (a call's ``wait_s``) for a decision on ``pending``'s
        approval from ``start_ns`` to ``end_ns`` (``time.time_ns``)."""


def stage_name(stage: Stage) -> str:
    """``PolicyStage`` -> ``policy``: the stage's name in spans and metrics."""
    return type(stage).__name__.removesuffix("Stage").lower()


async def _observed(
    stage: Stage,
    name: str,
    next: Next,
    call: Call,
    _clock: Callable[[], int] = time.perf_counter_ns,
) -> Result:
    # Marks, not a nested timer per stage: two appends per stage, and the exclusive time
    # of each is worked out once, by the observer, after the call.
    marks = call.marks
    assert marks is not None  # set by Pipeline._observed_entry
    marks.append((name, _clock()))
    try:
        return await stage(call, next)
    finally:
        marks.append((None, _clock()))


#: the stages a ``StageObserver`` times one by one: those that can take long (fact
#: lookups, a lock, the idempotency claim, the tool, the model's budget and upstream);
#: the others are checks of a few µs each, timed together as ``other`` (a wrapper per
#: stage cost ~0.7 µs of a ~50 µs governed read, measured). An approval's wait is told
#: apart (``approval_waited``).
OBSERVED = frozenset({"policy", "serialize", "idempotency", "execute", "budget", "upstream"})


def chain(stages: Sequence[Stage], observer: StageObserver | None = None) -> Next:
    """The stages as one callable, the first outermost; with ``observer``, the entry and
    exit of the stages in ``OBSERVED`` are marked on the call."""
    entry: Next = _end
    for stage in reversed(stages):
        name = stage_name(stage)
        if observer is not None and name in OBSERVED:
            entry = partial(_observed, stage, name, entry)  # positional: no kwargs dict
        else:
            entry = partial(stage, next=entry)
    return entry


class Pipeline:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.replay, self.serialize = ReplayStage(svc), SerializeStage(svc)
        self.draft, self.idempotency = DraftStage(), IdempotencyStage(svc)
        #: the stages every call passes, outermost first; ``ToolStage`` then hands the
        #: call to the chain of its tool
        self.stages: list[Stage] = [
            RecordStage(svc),
            SwitchStage(svc),
            CapsStage(svc),
            ToolStage(svc, self.tool_chain),
        ]
        self._by_tool = {tool.name: self.tool_stages(tool) for tool in svc.registry}
        self.observer: StageObserver | None = None
        self._build()

    def _build(self) -> None:
        observer = self.observer
        self._chains = {name: chain(st, observer) for name, st in self._by_tool.items()}
        self._entry = chain(self.stages, observer)

    def observe(self, observer: StageObserver | None) -> None:
        """Tell ``observer`` how long each stage of every call takes from now on (None:
        stop); the stage chains are rebuilt with or without the marks."""
        self.observer = observer
        self._build()

    def tool_stages(self, tool: ToolDef) -> list[Stage]:
        """The stages after the tool is known, for ``tool``: a stage that never applies to
        it (idempotency for a read, ``serialize_on`` where it has none) is left out rather
        than passed through (each level is one more coroutine frame on every call)."""
        svc, write = self.svc, tool.effect.is_write
        if tool.kind == "model":
            assert svc.models is not None
            budget = BudgetStage(svc, svc.models)
            return [
                IdentityStage(),
                SchemaStage(),
                PolicyStage(svc),
                ApprovalStage(svc),
                budget,
                UpstreamStage(svc, svc.models, budget),
            ]
        stages: list[Stage | None] = [
            IdentityStage(),
            SchemaStage(),
            self.replay if write else None,
            self.serialize if tool.name in self.serialize.on else None,
            PolicyStage(svc),
            ApprovalStage(svc),
            self.draft if write else None,
            self.idempotency if write else None,
            ExecuteStage(svc),
            VerifyStage(),
        ]
        return [stage for stage in stages if stage is not None]

    def tool_chain(self, tool: str) -> Next:
        return self._chains[tool]

    async def call(self, call: Call) -> Result:
        """Govern one proposed action; with ``call.wait_s``, wait that long for a decision
        on an approval it asks for, and run the approved action through the top again."""
        observer = self.observer
        if observer is None:
            result = await self._entry(call)
        else:  # _observed_entry inlined: one coroutine less on every observed call
            marks: list[tuple[str | None, int]] = [("other", time.perf_counter_ns())]
            call.marks = marks
            outcome: Result | None = None
            try:
                outcome = result = await self._entry(call)
            finally:
                marks.append((None, time.perf_counter_ns()))
                call.marks = None
                observer.call_done(call, outcome, marks)
        if isinstance(result, Pending) and call.wait_s:
            return await self.wait_and_resume(call.run, result, call.wait_s, call.actor)
        return result

    async def resume(self, run: RunState, record: ApprovalRecord, actor: str | None) -> Result:
        """Execute an approved action: the pipeline from the top, with the approved
        (possibly edited) arguments and the approval to let it through."""
        call = Call(
            run,
            record.tool,
            record.args,
            record.action_id,
            given_key=record.idempotency_key,
            actor=actor,
            approval=record,
        )
        if self.observer is None:
            return await self._entry(call)
        return await self._observed_entry(call, self.observer)

    async def _observed_entry(self, call: Call, observer: StageObserver) -> Result:
        """The stages for ``call``, the whole timed as ``other`` (the stages not timed
        one by one), then the observer told."""
        marks: list[tuple[str | None, int]] = [("other", time.perf_counter_ns())]
        call.marks = marks
        result: Result | None = None
        try:
            result = await self._entry(call)
            return result
        finally:
            marks.append((None, time.perf_counter_ns()))
            call.marks = None
            observer.call_done(call, result, marks)

    async def wait_and_resume(
        self, run: RunState, pending: Pending, wait_s: float, actor: str | None
    ) -> Result:
        start = time.time_ns()
        record = await self.wait_for_decision(pending.approval_id, wait_s)
        if self.observer is not None:
            self.observer.approval_waited(run, pending, start, time.time_ns())
        answer = outcome_of_approval(record, pending.action_id)
        if answer is not None:
            return answer
        return await self.resume(run, record, actor)

    async def wait_for_decision(
        self, approval_id: str, wait_s: float, *, while_in: frozenset[str] = PENDING
    ) -> ApprovalRecord:
        """The approval once its state is no longer one of ``while_in`` (by default: once
        it is decided), or as it is when ``wait_s`` ran out. The store is read off the
        event loop."""
        loop = asyncio.get_running_loop()
        until = loop.time() + wait_s
        # Woken when the approval changes in this process or any other (ApprovalWaiter:
        # in process, LISTEN/NOTIFY on PostgreSQL, one data_version poller on SQLite);
        # watching before the first read means a change in between is not missed.
        async with ApprovalWaiter.for_store(self.svc.store).watch(approval_id) as watch:
            record = await asyncio.to_thread(self.svc.approvals.get, approval_id)
            while record.state in while_in and await watch.changed(until - loop.time()):
                record = await asyncio.to_thread(self.svc.approvals.get, approval_id)
        return record
