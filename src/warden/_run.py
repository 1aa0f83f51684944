"""An open run of a ``Gateway``: ``await run.call(tool, args)`` is the governed call, and
``run.chat(model, messages)`` a governed model call."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select, update

from warden._sync import SyncGateway, SyncRun
from warden.errors import InvalidInputError, UsageError
from warden.events import checked_rationale
from warden.pipeline import Call, RunState
from warden.pipeline._models import ChatResult, ChatStreamResult
from warden.pipeline._runs import Sealer, save_counters
from warden.pipeline._success import judge, read_complete_actions
from warden.results import Allowed, Denied, FailureKind, Result
from warden.spec import MODEL_TOOL_PREFIX
from warden.store._tables import approvals as approvals_table
from warden.store._tables import runs

if TYPE_CHECKING:
    from warden.gateway import Gateway


#: how many runs' states a gateway keeps for their next call (see ``Gateway.resume_run``)
_KEPT_RUNS = 256


class Run:
    """An open run: ``await run.call(tool, args)`` is the governed call."""

    def __init__(
        self,
        gateway: Gateway,
        state: RunState,
        *,
        base: dict[str, Any] | None = None,
        version: int = 0,
        reusable: bool = False,
    ) -> None:
        self._gateway = gateway
        self.state = state
        self.closed = False
        #: a server-side resumed run: after save() its state is kept for the run's next call
        self._reusable = reusable
        # The counters as last stored, and their version (see save()).
        self._base = state.counters() if base is None else base
        self._version = version
        self._saved_steps = state.steps

    @property
    def run_id(self) -> str:
        return self.state.run_id

    async def call(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
        actor: str | None = None,
        api_key: str | None = None,
        confidence: float | None = None,
        rationale: str | None = None,
    ) -> Result:
        """Propose one action. ``wait``: seconds to wait for an approval before ``Pending``
        (an approved action then runs at once); ``actor``: who proposes it (an API key's
        identity), when not the run's opener; it may not approve it. ``api_key``: the id
        of the API key the call came with (the server passes it; rules read it as
        ``principal.key``). ``confidence``: how sure the agent is that the call is right
        (0 to 1), recorded for calibration. ``rationale``: why the agent proposes it, in
        its own words (at most 2,000 characters), recorded on ``action_requested`` and
        shown to the human deciding an approval as the agent's words; no rule reads it."""
        if self.closed:
            raise UsageError(f"run {self.run_id} is finished")
        if confidence is not None and not (
            isinstance(confidence, int | float)
            and not isinstance(confidence, bool)
            and 0.0 <= confidence <= 1.0
        ):
            raise InvalidInputError(f"confidence must be a number from 0 to 1, got {confidence!r}")
        stated = checked_rationale(rationale)
        state = self.state
        call = Call(
            state,
            tool,
            {} if args is None else args,
            f"{state.run_id}.{state.steps + 1}",
            given_key=idempotency_key,
            wait_s=wait,
            actor=actor,
            api_key=api_key,
            confidence=None if confidence is None else float(confidence),
            rationale=stated,
        )
        return await self._gateway.pipeline.call(call)

    async def chat(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        stream: bool = False,
        wire: Literal["openai", "anthropic"] = "openai",
        hints: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
        actor: str | None = None,
        api_key: str | None = None,
        **params: Any,
    ) -> ChatResult | ChatStreamResult | Result:
        """Call the declared model ``model`` (a governed call of the tool ``model:<name>``),
        or the model a route of that name picks (``routes:``, reading ``hints``, e.g.
        ``{"confidence": 0.4}``): kill switches, identity, schema, policy (``model.*`` and
        the request as ``args``), approval, budget, then the upstream (and its fallbacks).
        ``messages`` and ``params`` (``max_tokens``, ``temperature``, ``response_format``,
        ...) are the request in the ``wire`` shape (OpenAI's by default).

        Returns a ``ChatResult`` (reply, usage, cost), with ``stream=True`` a
        ``ChatStreamResult`` to iterate, or the ``Denied`` / ``Failed`` / ``Pending`` of a
        call that did not run (a model the budgets cannot pay for: ``budget_exceeded``).
        """
        if self.closed:
            raise UsageError(f"run {self.run_id} is finished")
        models = self._gateway.svc.models
        if models is None or (model not in models.declared and model not in models.routes):
            declared = ", ".join(sorted([*models.declared, *models.routes])) if models else "none"
            raise UsageError(
                f"no model or route {model!r} in workflow {self._gateway.spec.spec.name!r} "
                f"(declared: {declared}); declare it under 'models:' or 'routes:'"
            )
        args: dict[str, Any] = {"messages": messages, **params}
        if stream:
            args["stream"] = True
        if wire != "openai":
            args["wire"] = wire
        state = self.state
        call = Call(
            state,
            MODEL_TOOL_PREFIX + model,
            args,
            f"{state.run_id}.{state.steps + 1}",
            given_key=idempotency_key,
            wait_s=wait,
            actor=actor,
            api_key=api_key,
            hints=dict(hints or {}),
        )
        result = await self._gateway.pipeline.call(call)
        done = call.model
        if not isinstance(result, Allowed) or done is None:
            return result
        if done.stream is not None:
            return ChatStreamResult(call.action_id, done)
        return ChatResult.of(call.action_id, done)

    def save(self) -> None:
        """Store the run's counters (steps, per-tool counts, repeats, provenance, a stop)
        for its next call, in whichever process that call arrives.

        Written before this returns; if another call of the run saved in the meantime,
        the two calls' changes are merged (see ``warden.pipeline._runs``).
        """
        unsaved = self.unsaved()
        if unsaved is None:
            self._keep()
            return
        self.saved(*save_counters(self._gateway.store, self.run_id, **unsaved), unsaved["mine"])

    def unsaved(self) -> dict[str, Any] | None:
        """What ``save`` would write (``save_counters``'s keyword arguments); None when the
        counters are as stored. With ``saved``, for a caller that writes them itself (the
        server, awaiting the statement on its event loop)."""
        state = self.state
        mine = state.counters()
        if mine == self._base and state.steps == self._saved_steps:
            return None
        vault = self._gateway.svc.vault
        return {
            "base": self._base,
            "mine": mine,
            "version": self._version,
            "steps": state.steps,
            "sealer": None if vault is None else Sealer(vault, state.tenant),
        }

    def saved(self, stored: dict[str, Any], version: int, mine: dict[str, Any]) -> None:
        """The counters ``mine`` (``unsaved()``'s) are stored as ``stored`` at ``version``
        (``save_counters``'s answer): carry on from those."""
        state = self.state
        self._version = version
        if stored is not mine:  # merged with another call's counters: carry on from those
            steps, stopped = state.steps, state.stopped
            state.restore(stored)
            state.steps, state.stopped = steps, state.stopped or stopped
        self._base, self._saved_steps = stored, state.steps
        self._keep()

    def _keep(self) -> None:
        """Hand the state, now equal to the stored version, to the run's next call here."""
        if not self._reusable or self.state.stopped is not None:
            return
        gateway = self._gateway
        with gateway._resumed_lock:
            kept = gateway._resumed
            kept[self.run_id] = (self._version, self.state, self._base)
            kept.move_to_end(self.run_id)
            while len(kept) > _KEPT_RUNS:
                kept.popitem(last=False)

    def _cancel_open_approvals(self, conn: Any, now: datetime) -> None:
        """A finished run's pending or approved-but-not-executed actions can no longer run:
        each is cancelled and gets its terminal event."""
        svc = self._gateway.svc
        open_ = conn.execute(
            select(approvals_table.c.approval_id, approvals_table.c.action_id).where(
                approvals_table.c.run_id == self.run_id,
                approvals_table.c.state.in_(("pending", "approved")),
            )
        ).all()
        for approval_id, action_id in open_:
            won = any(
                svc.approvals.transition(
                    conn,
                    approval_id,
                    state,
                    state="cancelled",
                    decided_at=now,
                    decided_by="warden",
                    rationale="the run finished before the action was executed",
                )
                for state in ("pending", "approved")
            )
            if not won:
                continue
            svc.windows.void(conn, action_id)
            svc.emit(
                self.run_id,
                self.state.tenant,
                "approval_cancelled",
                {"approval_id": approval_id, "action_id": action_id, "reason": "run finished"},
            )
            svc.emit(
                self.run_id,
                self.state.tenant,
                "denied",
                {
                    "action_id": action_id,
                    "kind": FailureKind.APPROVAL_CANCELLED.value,
                    "reasons": ["the run finished before the action was executed"],
                    "rules": [],
                },
            )

    def finish(self, outcome: str = "completed") -> None:
        if self.closed:
            return
        self.closed = True
        gw = self._gateway
        self.save()
        finished: dict[str, Any] = {
            "outcome": outcome,
            "steps": self.state.steps,
            "stopped": self.state.stopped,
        }
        check = gw.svc.policy.success_when.get(self.state.task_type or "")
        if check is not None:
            # Judged from the ledger, not from the outcome the agent reports: what this
            # process buffered is written first, then other replicas' batches are awaited.
            gw.svc.ledger.flush()
            verdict = judge(
                check,
                {
                    "outcome": outcome,
                    "steps": self.state.steps,
                    "task_type": self.state.task_type,
                    "agent": self.state.agent,
                    "tenant": self.state.tenant,
                    "workflow": self.state.workflow,
                },
                read_complete_actions(gw.store, self.run_id, self.state.steps),
            )
            finished["success"] = verdict.success
            if verdict.error is not None:
                finished["success_error"] = verdict.error
        now = gw.svc.clock()
        with gw.svc.ledger.transaction() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.run_id == self.run_id)
                .values(status="finished", outcome=outcome, finished_at=now)
            )
            self._cancel_open_approvals(conn, now)
            gw.svc.emit(self.run_id, self.state.tenant, "run_finished", finished)


__all__ = ["Allowed", "Denied", "Gateway", "Run", "SyncGateway", "SyncRun"]
