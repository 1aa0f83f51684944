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
from collections.abc import Sequence
from functools import partial

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


def chain(stages: Sequence[Stage]) -> Next:
    """The stages as one callable, the first outermost."""
    entry: Next = _end
    for stage in reversed(stages):
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
        self._chains = {name: chain(stages) for name, stages in self._by_tool.items()}
        self._entry = chain(self.stages)

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
        result = await self._entry(call)
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
        return await self._entry(call)

    async def wait_and_resume(
        self, run: RunState, pending: Pending, wait_s: float, actor: str | None
    ) -> Result:
        record = await self.wait_for_decision(pending.approval_id, wait_s)
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
