"""The approval queue: list and filter, inspect, decide, wait, execute.

What a caller sees of an approval's arguments, evidence and result (docs/pii.md): an
approver or an auditor (or an admin key holding approval roles) sees them raw, to decide
on what will run, and each approval so shown is a ``vault_reads`` row; every other key
sees them with their PII tokenized, as the ledger holds them.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy import select

from warden.approvals import ApprovalRecord, suggest_many
from warden.auth import Principal, Role
from warden.errors import NotFoundError
from warden.server._deps import Caller, State, bound_agent, require, visible
from warden.server._paging import After, decode_cursor, link_next, page_of
from warden.server._problems import ApiProblem, problem_responses
from warden.server._schemas import (
    ID_PATTERN,
    ActionResult,
    ApprovalDecision,
    ApprovalId,
    ApprovalList,
    ApprovalOut,
)
from warden.server._state import ServerState
from warden.store._tables import parse_utc_text, runs, utc_text

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])
ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)

#: States after which waiting makes no sense
_SETTLED = {"rejected", "expired", "executed", "failed"}


def _now() -> datetime:
    return datetime.now(UTC)


def _sees_raw(caller: Principal) -> bool:
    if caller.role in (Role.APPROVER, Role.AUDITOR):
        return True
    return caller.role is Role.ADMIN and bool(caller.approval_roles)


def _shown(
    state: ServerState,
    caller: Principal,
    records: list[ApprovalRecord],
    purpose: str,
    suggest: bool = True,
) -> list[ApprovalOut]:
    """``records`` as ``caller`` may see them (in a store thread: a raw view is recorded),
    the pending ones with a suggested decision (their history read in one statement)."""
    now = _now()
    if not records:
        return []
    shown = _as_seen(state, caller, records, purpose)
    waiting = [r for r in shown if r.state == "pending"] if suggest else []
    suggested = dict(
        zip(
            (r.approval_id for r in waiting),
            suggest_many(state.store, waiting, now),
            strict=True,
        )
    )
    return [ApprovalOut.of(r, now, suggested.get(r.approval_id)) for r in shown]


def _as_seen(
    state: ServerState, caller: Principal, records: list[ApprovalRecord], purpose: str
) -> list[ApprovalRecord]:
    """``records`` raw for a caller who sees them raw (the read recorded), else with their
    PII tokenized as the ledger holds it."""
    if _sees_raw(caller):
        vault = state.gateway(records[0].workflow).svc.vault
        if vault is not None:
            with state.store.write() as conn:
                for r in records:
                    vault.record_read(
                        conn,
                        r.tenant,
                        f"approval:{r.approval_id}",
                        reader=caller.identity,
                        role=caller.role.value,
                        purpose=purpose,
                    )
        return records
    out = []
    for r in records:
        pii = state.gateway(r.workflow).svc.pii
        if pii is not None:
            r = replace(
                r,
                args=pii.redact(r.tenant, r.args),
                evidence=pii.redact(r.tenant, r.evidence),
                result=pii.redact(r.tenant, r.result),
            )
        out.append(r)
    return out


def _get(state: State, caller: Caller, approval_id: str) -> ApprovalRecord:
    any_gateway = next(iter(state.gateways.values()))
    try:
        record = any_gateway.approvals.get(approval_id)
    except NotFoundError:
        raise ApiProblem(404, "not-found", f"no approval {approval_id!r}") from None
    visible(caller, record.tenant, f"approval {approval_id!r}")
    if bound_agent(caller) is not None:  # an agent key sees its own agent's approvals only
        owner = _run_agents(state, [record.run_id]).get(record.run_id)
        if owner is None or not caller.owns(owner, record.workflow):
            raise ApiProblem(404, "not-found", f"no approval {approval_id!r}")
    return record


def _run_agents(state: State, run_ids: list[str]) -> dict[str, str]:
    with state.store.read() as conn:
        found = conn.execute(select(runs.c.run_id, runs.c.agent).where(runs.c.run_id.in_(run_ids)))
        return {str(row.run_id): str(row.agent) for row in found}


@router.get(
    "",
    response_model=ApprovalList,
    responses=ERRORS,
    summary="List approvals",
    description="Soonest deadline first. Filter by tenant, approver role, SLA class, state and age.",
)
async def list_approvals(
    request: Request,
    response: Response,
    state: State,
    caller: Caller,
    tenant: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
    role: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
    sla_class: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
    approval_state: str | None = Query(
        default="pending",
        alias="state",
        pattern="^(pending|approved|rejected|expired|executing|executed|failed)$",
    ),
    min_age_s: float | None = Query(default=None, ge=0, le=10 * 365 * 86400),
    limit: int = Query(default=100, ge=1, le=500),
    after: After = None,
    suggest: bool = Query(
        default=True,
        description="give each pending approval its `suggestion` (false: leave it null and "
        "skip the history read)",
    ),
) -> ApprovalList:
    start = decode_cursor(after, 3)
    position: tuple[datetime, datetime, str] | None = None
    if start is not None:
        try:
            position = (parse_utc_text(str(start[0])), parse_utc_text(str(start[1])), str(start[2]))
        except ValueError:
            raise ApiProblem(
                422,
                "validation",
                "after is not a cursor of this list",
                errors=[{"loc": ["query", "after"], "msg": "not a cursor", "type": "value_error"}],
            ) from None
    if caller.tenant != "*":
        if tenant is not None and tenant != caller.tenant:
            return ApprovalList(items=[])
        tenant = caller.tenant
    now = _now()
    any_gateway = next(iter(state.gateways.values()))
    fetched = await state.run_sync(
        functools.partial(
            any_gateway.approvals.list,
            tenant=tenant,
            state=approval_state,
            role=role,
            sla_class=sla_class,
            limit=limit + 1,
            after=position,
        )
    )
    # The cursor follows what was read, before the filters below thin the page out.
    fetched, nxt = page_of(
        fetched, limit, lambda r: (utc_text(r.deadline), utc_text(r.created_at), r.approval_id)
    )
    records = fetched
    if min_age_s is not None:
        cutoff = now - timedelta(seconds=min_age_s)
        records = [r for r in records if r.created_at <= cutoff]
    if bound_agent(caller) is not None and records:
        agents = await state.run_sync(_run_agents, state, sorted({r.run_id for r in records}))
        records = [r for r in records if caller.owns(agents.get(r.run_id, ""), r.workflow)]
    items = await state.run_sync(_shown, state, caller, records, "approval list", suggest)
    link_next(request, response, nxt)
    return ApprovalList(items=items, next=nxt)


@router.get(
    "/{approval_id}", response_model=ApprovalOut, responses=ERRORS, summary="Get an approval"
)
async def get_approval(approval_id: ApprovalId, state: State, caller: Caller) -> ApprovalOut:
    record = await state.run_sync(_get, state, caller, approval_id)
    return (await state.run_sync(_shown, state, caller, [record], "approval view"))[0]


@router.get(
    "/{approval_id}/wait",
    response_model=ApprovalOut,
    responses=ERRORS,
    summary="Long-poll until the approval leaves `pending` (or the timeout passes)",
)
async def wait_approval(
    approval_id: str,
    state: State,
    caller: Caller,
    timeout_s: float = Query(default=30.0, ge=0, le=60),
) -> ApprovalOut:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout_s
    # Woken when the approval changes, here or on any replica (approvals.ApprovalWaiter):
    # an open wait costs no query until then. Watching before the first read means a
    # decision between the read and the wait is not missed.
    async with state.waiter.watch(approval_id) as watch:
        record = await state.run_sync(_get, state, caller, approval_id)
        gateway = state.gateway(record.workflow)
        while record.state == "pending" and await watch.changed(until - loop.time()):
            record = await state.run_sync(gateway.approvals.get, approval_id)
    return (await state.run_sync(_shown, state, caller, [record], "approval wait"))[0]


@router.post(
    "/{approval_id}/decision",
    response_model=ApprovalOut,
    responses=ERRORS,
    summary="Approve or reject",
)
async def decide(
    approval_id: str,
    body: ApprovalDecision,
    state: State,
    caller: Caller,
    on_behalf_of_header: str | None = Header(
        default=None,
        alias="X-On-Behalf-Of",
        min_length=1,
        max_length=200,
        description="bridge keys only: the person this decision is made for (or the body's"
        " `on_behalf_of`)",
    ),
) -> ApprovalOut:
    require(caller, Role.APPROVER)
    record = await state.run_sync(_get, state, caller, approval_id)
    on_behalf_of = body.on_behalf_of or on_behalf_of_header
    if body.on_behalf_of and on_behalf_of_header and body.on_behalf_of != on_behalf_of_header:
        raise ApiProblem(
            422, "validation", "on_behalf_of in the body and X-On-Behalf-Of name different people"
        )
    if on_behalf_of is not None and not caller.bridge:
        raise ApiProblem(
            403,
            "forbidden",
            "only a bridge key (warden keys create --bridge) may decide on behalf of someone",
        )
    gateway = state.gateway(record.workflow)
    # The key's approval roles, not the request, say which approvals it may decide.
    if body.decision == "reject":
        if body.args is not None:
            raise ApiProblem(422, "validation", "edited args only go with decision 'approve'")
        decided = await gateway.reject(
            approval_id,
            approver=caller.identity,
            rationale=body.rationale,
            roles=caller.approval_roles,
            on_behalf_of=on_behalf_of,
        )
    else:
        decided = await gateway.approve(
            approval_id,
            approver=caller.identity,
            rationale=body.rationale,
            args=body.args,
            roles=caller.approval_roles,
            on_behalf_of=on_behalf_of,
        )
    return (await state.run_sync(_shown, state, caller, [decided], "approval decision"))[0]


@router.post(
    "/{approval_id}/execute",
    response_model=ActionResult,
    responses=ERRORS,
    summary="Execute an approved action (exactly once, whoever calls first)",
)
async def execute(
    approval_id: str, state: State, caller: Caller, wait_s: float = Query(default=0.0, ge=0, le=60)
) -> ActionResult:
    require(caller, Role.AGENT)
    record = await state.run_sync(_get, state, caller, approval_id)
    result = await state.gateway(record.workflow).execute_approved(
        approval_id, wait=wait_s, actor=caller.identity
    )
    return ActionResult.of(result)


__all__ = ["_SETTLED", "router"]
