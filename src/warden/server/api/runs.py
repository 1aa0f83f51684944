"""Runs and the governed call: open, get, list, finish; propose actions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import and_, or_, select

from warden.auth import ALL_TENANTS, Principal, Role
from warden.server._deps import Caller, State, bound_agent, require, tenant_for, visible
from warden.server._paging import After, decode_cursor, link_next, page_of
from warden.server._problems import ApiProblem, problem_responses
from warden.server._schemas import (
    ID_PATTERN,
    ActionCreate,
    ActionResult,
    RunCreate,
    RunFinish,
    RunId,
    RunList,
    RunOut,
)
from warden.server._state import ServerState
from warden.store._tables import parse_utc_text, runs, utc_text

router = APIRouter(prefix="/v1/runs", tags=["runs"])
ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)


def _run_row(state: State, run_id: str) -> Any:
    with state.store.read() as conn:
        return conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()


def _visible_run(state: State, caller: Caller, run_id: str, *, running: bool = False) -> Any:
    """The run's row; 404 if absent, another tenant's or (for an agent key) another agent's;
    409 if it must be running and is not."""
    row = _run_row(state, run_id)
    if row is None:
        raise ApiProblem(404, "not-found", f"no run {run_id!r}")
    bound_agent(caller)
    visible(caller, row["tenant"], f"run {run_id!r}", agent=row["agent"], workflow=row["workflow"])
    if running and row["status"] != "running":
        raise ApiProblem(409, "run-finished", f"run {run_id} is {row['status']}; open a new run")
    return row


def _out(row: Any) -> RunOut:
    return RunOut(**{k: row[k] for k in RunOut.model_fields})


@router.post("", status_code=201, response_model=RunOut, responses=ERRORS, summary="Open a run")
async def open_run(body: RunCreate, state: State, caller: Caller) -> RunOut:
    require(caller, Role.AGENT)
    tenant = tenant_for(caller, body.tenant)
    gateway = state.gateway(body.workflow)
    caller.check_open(body.agent, body.workflow)  # an agent key opens runs only as its agent
    run = await state.run_sync(
        gateway.open_run,
        tenant=tenant,
        agent=body.agent,
        task=body.task,
        task_type=body.task_type,
        end_user=body.end_user,
        opened_by=caller.identity,
        versions=body.versions,
    )
    return _out(await state.run_sync(_run_row, state, run.run_id))


@router.get("", response_model=RunList, responses=ERRORS, summary="List runs")
async def list_runs(
    request: Request,
    response: Response,
    state: State,
    caller: Caller,
    tenant: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
    workflow: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
    status: str | None = Query(default=None, pattern="^(running|finished)$"),
    limit: int = Query(default=100, ge=1, le=500),
    after: After = None,
) -> RunList:
    # Newest first; the run id breaks ties so that a cursor names one position exactly.
    query = (
        select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id.desc()).limit(limit + 1)
    )
    start = decode_cursor(after, 2)
    if start is not None:
        try:
            at = parse_utc_text(str(start[0]))
        except ValueError:
            raise ApiProblem(
                422,
                "validation",
                "after is not a cursor of this list",
                errors=[{"loc": ["query", "after"], "msg": "not a cursor", "type": "value_error"}],
            ) from None
        query = query.where(
            or_(
                runs.c.started_at < at,
                and_(runs.c.started_at == at, runs.c.run_id < str(start[1])),
            )
        )
    if caller.tenant != "*":
        if tenant is not None and tenant != caller.tenant:
            return RunList(items=[])
        tenant = caller.tenant
    if tenant is not None:
        query = query.where(runs.c.tenant == tenant)
    if workflow is not None:
        query = query.where(runs.c.workflow == workflow)
    if status is not None:
        query = query.where(runs.c.status == status)
    agent = bound_agent(caller)
    if agent is not None:
        query = query.where(runs.c.agent == agent)
        if caller.workflows:
            query = query.where(runs.c.workflow.in_(sorted(caller.workflows)))

    def read() -> list[RunOut]:
        with state.store.read() as conn:
            return [_out(r) for r in conn.execute(query).mappings()]

    found = await state.run_sync(read)
    page, nxt = page_of(found, limit, lambda r: (utc_text(r.started_at), r.run_id))
    link_next(request, response, nxt)
    return RunList(items=page, next=nxt)


@router.get("/{run_id}", response_model=RunOut, responses=ERRORS, summary="Get a run")
async def get_run(run_id: RunId, state: State, caller: Caller) -> RunOut:
    return _out(await state.run_sync(_visible_run, state, caller, run_id))


@router.post("/{run_id}/finish", response_model=RunOut, responses=ERRORS, summary="Finish a run")
async def finish_run(run_id: RunId, body: RunFinish, state: State, caller: Caller) -> RunOut:
    require(caller, Role.AGENT)

    def finish() -> Any:
        row = _visible_run(state, caller, run_id, running=True)
        run = state.gateway(row["workflow"]).resume_run(run_id)
        run.finish(body.outcome)
        return _run_row(state, run_id)

    return _out(await state.run_sync(finish))


@router.post(
    "/{run_id}/actions",
    response_model=ActionResult,
    responses=ERRORS,
    summary="Propose an action: the governed call",
    description="Returns the decision and, when allowed, the tool's result. `wait_s` waits that "
    "long for a pending approval before answering `pending`.",
)
async def propose(run_id: RunId, body: ActionCreate, state: State, caller: Caller) -> ActionResult:
    return await govern(state, caller, run_id, body)


async def govern(
    state: ServerState, caller: Principal, run_id: str, body: ActionCreate
) -> ActionResult:
    """The governed call for ``caller``: the route above, and ``server._fastpath``."""
    require(caller, Role.AGENT)
    # One statement takes the call's step and reads the run: action ids stay unique and
    # max_steps exact however many replicas serve the run's calls.
    # An agent key claims only its own agent's runs: another agent's run keeps its steps.
    agent = bound_agent(caller)
    workflows = state.workflow_names
    if agent is not None and caller.workflows:
        workflows = tuple(w for w in workflows if w in caller.workflows)
    row = await state.claim_step(
        run_id,
        workflows=workflows,
        tenant=None if caller.tenant == ALL_TENANTS else caller.tenant,
        agent=agent,
    )
    if row is None:  # say why: absent or another tenant's, finished, or not served here
        found = await state.run_sync(_visible_run, state, caller, run_id, running=True)
        state.gateway(found["workflow"])
        raise ApiProblem(409, "run-finished", f"run {run_id} finished meanwhile; open a new run")
    run = state.gateway(row["workflow"]).resume_run(run_id, row=row, claimed=True)
    result = await run.call(
        body.tool,
        body.args,
        idempotency_key=body.idempotency_key,
        wait=body.wait_s,
        actor=caller.identity,
        api_key=caller.key_id,
        confidence=body.confidence,
        rationale=body.rationale,
    )
    await state.save_run(run)
    return ActionResult.of(result)
