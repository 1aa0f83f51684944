"""The model stages: a model call's budget, then its upstream.

    ... → policy → approval → budget → upstream

``BudgetStage`` reserves the call's worst case in every budget that applies, in one store
transaction (``warden.economics.Budgets``), capping ``max_tokens`` to what the budgets
can pay; it settles the reservation to the call's priced usage when the call ends (when a
stream ends, for a streamed call), or releases it when the call failed before any token.
A call whose usage the upstream did not report is charged what was reserved: unknown is
never recorded as 0. The reservation comes after the approval stage, so money is not held
while a human decides.

``UpstreamStage`` checks the kill switches once more at the moment of the call (the model
and the workflow can be switched off), then sends the request (retries and the circuit
breaker are the upstream client's) and hands on the reply or the open stream.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import Connection

from warden import notify
from warden.economics import Amount, Crossing, Exceeded, Reservation, Settlement
from warden.errors import InvalidInputError, UsageError
from warden.pipeline._call import Call
from warden.pipeline._models import (
    GovernedStream,
    HeldStream,
    ModelCall,
    Models,
    input_token_bound,
    output_problem,
    to_nusd,
    usage_json,
)
from warden.pipeline._services import Services
from warden.pipeline.stages._base import Next
from warden.results import Allowed, Denied, Failed, FailureKind, Result
from warden.spec import MODEL_TOOL_PREFIX
from warden.upstream import (
    ChatStream,
    UpstreamCircuitOpen,
    UpstreamError,
    UpstreamTimeout,
    Usage,
    parse_request,
)


class BudgetStage:
    def __init__(self, svc: Services, models: Models) -> None:
        self.svc = svc
        self.models = models

    async def __call__(self, call: Call, next: Next) -> Result:
        tool = call.tool
        assert tool is not None
        name = Models.name_of(tool.name)
        spec = self.models.declared[name]
        body = dict(call.kwargs)
        wire = body.pop("wire", "openai")
        try:
            request = parse_request(wire, {**body, "model": spec.model})
        except InvalidInputError as exc:
            return Failed(FailureKind.SCHEMA_ERROR, str(exc), call.action_id)
        if call.approval is not None and request.stream:
            # An approved call runs later, for whoever executes it: as one reply, since
            # nobody is there to read a stream.
            request = request.model_copy(update={"stream": False})
        model = call.model = ModelCall(name, spec, request, routed=call.routed)
        tenant = call.run.tenant
        key = self.models.cache_key(tenant, name, request)
        if key is not None:
            hit = await asyncio.to_thread(self.models.cache_get, tenant, key, request.wire)
            if hit is not None:
                model.reply, model.cached, model.cached_cost = hit.reply, True, hit.cost_usd
                await self.settle(call, None)
                return Allowed(hit.reply.body, call.action_id)
        targets = self.models.targets(call.run)
        # An invalid structured output is tried once more on the same model, then on its
        # escalate_to model: each attempt reserved, settled and recorded on its own.
        retries = [name, *([spec.escalate_to] if spec.escalate_to else [])]
        while True:
            if targets:
                refused = await self._reserve(call, model, targets)
                if refused is not None:
                    return refused
            try:
                result = await next(call)
            except BaseException:
                await self._release(model)
                raise
            invalid = (
                isinstance(result, Failed)
                and result.kind is FailureKind.OUTPUT_SCHEMA_ERROR
                and model.reply is not None
            )
            if invalid and retries:
                assert isinstance(result, Failed) and model.reply is not None
                await self.settle(call, model.reply.usage)  # the failed attempt is paid for
                again = retries.pop(0)
                model.escalated.append(f"{model.name}: {result.detail}")
                model.name, model.spec = again, self.models.declared[again]
                model.request = model.request.with_model(model.spec.model)
                model.reservation, model.reply, model.settled = None, None, False
                continue
            if invalid:
                assert model.reply is not None
                await self.settle(call, model.reply.usage)
                return result
            if not isinstance(result, Allowed):
                await self._release(model)
                return result
            if model.stream is not None:
                return result  # settled when the stream ends (GovernedStream)
            assert model.reply is not None
            await self.settle(call, model.reply.usage)
            if key is not None and model.name == name and not model.escalated:
                await asyncio.to_thread(
                    self.models.cache_put, tenant, key, name, model.reply, model.cost_usd
                )
            return result

    async def _reserve(self, call: Call, model: ModelCall, targets: Any) -> Result | None:
        """Reserve the call's worst case; reroute or refuse when the budgets cannot pay."""
        tried: list[str] = []
        loop = asyncio.get_running_loop()
        until = loop.time() + min(model.spec.timeout.total_seconds(), HOLD_WAIT_S)
        pause = 0.01
        while True:
            # The chain's dearest model: a fallback that answers costs at most this.
            bound, cap = input_token_bound(model.request), model.request.token_cap
            pricing = max(
                (self.models.pricing[n] for n in self.models.chain_names(model.name)),
                key=lambda p: p.worst_case(bound, cap or 4096),
            )
            try:
                held = await asyncio.to_thread(
                    self.models.budgets.reserve_call,
                    targets,
                    pricing,
                    bound,
                    cap,
                    reservation_id=f"{call.action_id}.{len(model.escalated)}",
                )
            except UsageError as exc:  # no room for output in the context window
                return Failed(FailureKind.SCHEMA_ERROR, str(exc), call.action_id)
            if isinstance(held, Reservation):
                model.reservation = held
                if held.capped and held.max_output_tokens is not None:
                    model.capped = held.max_output_tokens
                    model.request = model.request.with_token_cap(held.max_output_tokens)
                return None
            if _fits_once_settled(held) and loop.time() < until:
                # Calls in flight hold what would pay for this one; they settle at most
                # at what they hold (usually less: their input is over-counted), so wait
                # for them rather than refuse a call the budget may well pay.
                await asyncio.sleep(pause * (0.5 + random.random()))
                pause = min(pause * 2, 0.25)
                continue
            tried.append(model.name)
            budget = next(t.limit for t in targets if t.limit.name == held.budget)
            route = self._route_of(held)
            if route is None or route in tried:
                return Denied(
                    FailureKind.BUDGET_EXCEEDED, _refusal(held), call.action_id, (budget.name,)
                )
            model.rerouted = (
                f"budget {held.budget!r} cannot pay for {model.name!r}: routed to {route!r}"
            )
            model.name, model.spec = route, self.models.declared[route]
            model.request = model.request.with_model(model.spec.model)

    def _route_of(self, held: Exceeded) -> str | None:
        for budget in self.svc.loaded.spec.budgets:
            if budget.name == held.budget:
                return budget.route_model
        return None

    async def _release(self, model: ModelCall) -> None:
        if model.reservation is not None and not model.settled:
            model.settled = True
            await asyncio.to_thread(self.models.budgets.release, model.reservation)

    async def settle(self, call: Call, usage: Usage | None, *, streamed: bool = False) -> None:
        """Price the call, charge the budgets, add it to the run's totals, record it."""
        model = call.model
        assert model is not None
        if model.settled:
            return
        model.settled = True
        model.usage = usage
        held = model.reservation
        cost: Decimal | None = None
        tokens: int | None = None
        if model.cached:  # no upstream call: nothing spent
            cost, tokens = Decimal(0), 0
        elif usage is not None:
            cost = self.models.pricing[model.name].price(usage)
            tokens = usage.total_tokens
        elif held is not None:  # unknown usage: charged what was reserved, its worst case
            cost, tokens = held.amount.usd, held.amount.tokens
        model.cost_usd = cost
        budget: dict[str, Any] | None = None
        if held is not None:
            actual = Amount(cost if cost is not None else Decimal(0), tokens or 0)
            settlement: Settlement = await asyncio.to_thread(
                self.models.budgets.settle,
                held,
                actual,
                on_crossed=partial(self._alert, call, model.name),
            )
            budget = {
                "reservation": held.id,
                "budgets": [t.limit.name for t in held.targets],
                "held_usd": str(held.amount.usd),
                "held_tokens": held.amount.tokens,
                "over_reservation_usd": str(settlement.over_reservation.usd),
                "late": settlement.late,
                "crossed": [
                    {"budget": c.budget, "unit": c.unit, "threshold": str(c.threshold)}
                    for c in settlement.crossed
                ],
            }
        run = call.run
        if cost is not None:
            run.cost_nusd += to_nusd(cost)
        run.tokens += tokens or 0
        route = model.stream.inner.route if model.stream is not None else None
        if route is None and model.reply is not None:
            route = model.reply.route
        self.svc.emit(
            run.run_id,
            run.tenant,
            "usage",
            {
                "action_id": call.action_id,
                "model": model.name,
                "route": {
                    "upstream": route.upstream if route else model.name,
                    "model": route.model if route else model.spec.model,
                    "attempts": route.attempts if route else 0,
                    "skipped": [s.reason for s in route.skipped] if route else [],
                },
                "usage": usage_json(usage),
                "cost_usd": None if cost is None else str(cost),
                "priced_by": self.models.priced_by(model.name),
                "budget": budget,
                "capped_max_tokens": model.capped,
                "rerouted": model.rerouted,
                "routed": model.routed,
                "escalated": list(model.escalated),
                "streamed": streamed,
                "cached": model.cached,
                "saved_usd": None if model.cached_cost is None else str(model.cached_cost),
            },
        )

    def _alert(
        self, call: Call, model: str, conn: Connection, crossed: tuple[Crossing, ...]
    ) -> None:
        """A budget went past an ``alert_at`` fraction: a ``budget_threshold`` webhook,
        enqueued in the settle's transaction."""
        for c in crossed:
            notify.enqueue(
                conn,
                tenant=call.run.tenant,
                kind="budget_threshold",
                now=self.svc.clock(),
                payload={
                    "budget": c.budget,
                    "scope_key": c.scope_key,
                    "unit": c.unit,
                    "threshold": str(c.threshold),
                    "limit": str(c.limit),
                    "spent": str(c.spent),
                    "workflow": self.svc.workflow,
                    "run_id": call.run.run_id,
                    "action_id": call.action_id,
                    "model": model,
                },
            )


#: at most this long a call waits for calls in flight to settle before it is refused
HOLD_WAIT_S = 30.0


def _fits_once_settled(held: Exceeded) -> bool:
    """Whether the call would fit in every refusing budget if the calls holding money in
    it settled at nothing (so waiting for them can help)."""
    needed = held.needed
    for b in held.budgets:
        if b.left_usd is not None and needed.usd > b.left_usd + b.reserved_usd:
            return False
        if b.left_tokens is not None and needed.tokens > b.left_tokens + b.reserved_tokens:
            return False
    return any(b.reserved_usd > 0 or b.reserved_tokens > 0 for b in held.budgets)


def _refusal(held: Exceeded) -> tuple[str, ...]:
    out = []
    for status in held.budgets:
        left = []
        if status.left_usd is not None:
            left.append(f"${status.left_usd} of ${status.limit_usd}")
        if status.left_tokens is not None:
            left.append(f"{status.left_tokens} of {status.limit_tokens} tokens")
        out.append(f"budget {status.budget!r} ({status.scope.value}) has {' and '.join(left)} left")
    needed = held.needed
    out.append(f"this call needs at least ${needed.usd} ({needed.tokens} tokens) reserved")
    return tuple(out)


class UpstreamStage:
    def __init__(self, svc: Services, models: Models, budget: BudgetStage) -> None:
        self.svc = svc
        self.models = models
        self.budget = budget

    async def __call__(self, call: Call, next: Next) -> Result:
        model, run = call.model, call.run
        assert model is not None
        # The switches at the moment of the call: the model actually called (after any
        # reroute) and everything above it; switched-off fallbacks are left out.
        switch = self.svc.switches.blocking(
            run.tenant, self.svc.workflow, MODEL_TOOL_PREFIX + model.name
        )
        if switch is not None:
            return Failed(FailureKind.KILLED, switch.describe(), call.action_id)
        svc = self.svc

        def switched_off(name: str) -> bool:
            return (
                svc.switches.blocking(run.tenant, svc.workflow, MODEL_TOOL_PREFIX + name)
                is not None
            )

        schema = model.output_schema()
        call.attempts = 1
        try:
            chain = self.models.chain(model.name, without=switched_off)
            if model.request.stream:
                started = await chain.open_stream(model.request)
                model.name = started.route.upstream
                # with an output check, held back until the verdict
                opened = started if schema is None else await HeldStream.read(started)
            else:
                reply = await chain.chat(model.request)
                model.name = reply.route.upstream
        except UpstreamError as exc:
            call.attempts = max(1, exc.attempts)
            return Failed(_failure_kind(exc), _detail(exc), call.action_id)
        except InvalidInputError as exc:  # a request the model's API cannot express
            spec = self.models.declared[model.name]
            return Failed(
                FailureKind.SCHEMA_ERROR,
                f"model {model.name!r} ({spec.upstream}) cannot take this request: {exc}",
                call.action_id,
            )
        model.spec = self.models.declared[model.name]
        if model.request.stream:
            text = opened.text
            if schema is not None and (problem := output_problem(schema, text)) is not None:
                model.reply = opened.reply()
                return Failed(FailureKind.OUTPUT_SCHEMA_ERROR, problem, call.action_id)
            model.stream = GovernedStream(opened, lambda s: self._ended(call, s))
            return Allowed({"streamed": True, "model": model.name}, call.action_id)
        model.reply = reply
        call.attempts = reply.route.attempts
        if schema is not None and (problem := output_problem(schema, reply.text)) is not None:
            return Failed(FailureKind.OUTPUT_SCHEMA_ERROR, problem, call.action_id)
        return Allowed(reply.body, call.action_id)

    async def _ended(self, call: Call, stream: ChatStream | HeldStream) -> None:
        await self.budget.settle(call, stream.usage, streamed=True)


def _failure_kind(exc: UpstreamError) -> FailureKind:
    if isinstance(exc, UpstreamTimeout):
        return FailureKind.TIMEOUT
    if isinstance(exc, UpstreamCircuitOpen):
        return FailureKind.CIRCUIT_OPEN
    return FailureKind.UPSTREAM_ERROR


def _detail(exc: UpstreamError) -> str:
    return str(exc)
