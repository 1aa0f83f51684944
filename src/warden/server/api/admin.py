"""Kill switches, the ledger, loaded workflows, API keys."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as FastApiPath
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from warden.auth import ALL_TENANTS, KeyInfo, Role
from warden.errors import NotFoundError, UsageError
from warden.ledger import (
    MAX_PAGE,
    export_page,
    flush_writers,
    iter_events,
    stored_checkpoints,
    take_checkpoint,
    verify,
)
from warden.pipeline import Scope
from warden.pipeline._replicas import live_replicas
from warden.server._deps import Caller, State, bound_agent, require, tenant_for, visible
from warden.server._paging import After, decode_cursor, in_memory_page, link_next, page_of
from warden.server._problems import ApiProblem, problem_responses
from warden.server._schemas import (
    ID_PATTERN,
    EventList,
    EventOut,
    ProblemOut,
    RunId,
    SwitchList,
    SwitchOut,
    SwitchSet,
    ToolList,
    ToolOut,
    VerifyOut,
    WorkflowList,
    WorkflowOut,
)
from warden.store._tables import runs

router = APIRouter(prefix="/v1", tags=["operations"])
ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)


@router.get("/switches", response_model=SwitchList, responses=ERRORS, summary="List kill switches")
async def list_switches(
    request: Request,
    response: Response,
    state: State,
    caller: Caller,
    after: After = None,
    limit: int = Query(default=500, ge=1, le=500),
) -> SwitchList:
    """Each switch with the live replicas that have read it (``seen_by``) and those that
    have not yet (``waiting_for``): see ``GET /v1/replicas``."""
    live = await state.run_sync(live_replicas, state.store, state.settings.replica_live_s)
    items = [
        SwitchOut.of(s, live)
        for s in await state.run_sync(state.switches.list)
        if caller.tenant == ALL_TENANTS or s.scope is not Scope.TENANT or s.target == caller.tenant
    ]
    page, nxt = in_memory_page(items, after, limit, lambda s: (s.scope, s.target), 2)
    link_next(request, response, nxt)
    return SwitchList(items=page, next=nxt)


@router.post("/switches", response_model=SwitchOut, responses=ERRORS, summary="Flip a kill switch")
async def set_switch(body: SwitchSet, state: State, caller: Caller) -> SwitchOut:
    require(caller)  # admins only
    if body.scope == "tenant":
        target = tenant_for(caller, body.target)
    else:
        if caller.tenant != ALL_TENANTS:
            raise ApiProblem(
                403,
                "forbidden",
                f"a {body.scope} switch affects every tenant: needs an all-tenant admin key",
            )
        if body.scope != "global" and not body.target:
            raise ApiProblem(422, "validation", f"a {body.scope} switch needs a target")
        target = body.target or "*"
    switch = await state.run_sync(
        state.switches.set,
        body.scope,
        target,
        active=body.active,
        by=caller.identity,
        reason=body.reason,
    )
    await state.run_sync(state.ledger.flush, durable=True)
    return SwitchOut.of(switch)


@router.get(
    "/ledger/runs/{run_id}/events",
    response_model=EventList,
    responses=ERRORS,
    summary="A run's events",
)
async def run_events(
    run_id: RunId,
    request: Request,
    response: Response,
    state: State,
    caller: Caller,
    after: After = None,
    limit: int = Query(default=1000, ge=1, le=5000),
) -> EventList:
    tenant = None if caller.tenant == ALL_TENANTS else caller.tenant
    start = decode_cursor(after, 1)
    if start is not None and not isinstance(start[0], int):
        raise ApiProblem(
            422,
            "validation",
            "after is not a cursor of this list",
            errors=[{"loc": ["query", "after"], "msg": "not a cursor", "type": "value_error"}],
        )
    if bound_agent(caller) is not None:  # an agent key reads its own agent's runs only
        with state.store.read() as conn:
            run = conn.execute(
                select(runs.c.tenant, runs.c.agent, runs.c.workflow).where(runs.c.run_id == run_id)
            ).first()
        if run is None:
            raise ApiProblem(404, "not-found", f"no events for run {run_id!r}")
        visible(
            caller, run.tenant, f"events for run {run_id!r}", agent=run.agent, workflow=run.workflow
        )

    def read() -> list[EventOut]:
        for gateway in state.gateways.values():
            gateway.flush()
        found = iter_events(
            state.store,
            run_id=run_id,
            tenant=tenant,
            after_seq=0 if start is None else int(start[0]),
            limit=limit + 1,
        )
        return [EventOut(**e.to_json()) for e in found]

    events = await state.run_sync(read)
    if not events and start is None:
        raise ApiProblem(404, "not-found", f"no events for run {run_id!r}")
    page, nxt = page_of(events, limit, lambda e: (e.seq,))
    link_next(request, response, nxt)
    return EventList(items=page, next=nxt)


@router.get(
    "/ledger/verify", response_model=VerifyOut, responses=ERRORS, summary="Verify the hash chain"
)
async def verify_ledger(
    state: State,
    caller: Caller,
    tenant: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
) -> VerifyOut:
    require(caller, Role.AUDITOR)
    scope = tenant if caller.tenant == ALL_TENANTS else tenant_for(caller, tenant)
    report = await state.run_sync(verify, state.store, tenant=scope)
    return VerifyOut(
        ok=report.ok,
        events=report.events,
        streams=report.streams,
        problems=[
            ProblemOut(
                kind=p.kind, stream=p.stream, seq=p.seq, event_id=p.event_id, detail=p.detail
            )
            for p in report.problems
        ],
    )


@router.get(
    "/ledger/export",
    responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines"},
        **ERRORS,
    },
    summary="Export events as JSON lines",
    response_class=StreamingResponse,
)
async def export_ledger(
    state: State,
    caller: Caller,
    tenant: str | None = Query(default=None, max_length=120, pattern=ID_PATTERN),
    after: str | None = Query(
        default=None,
        max_length=40,
        description="Resume after this cursor (from the Warden-Next-Cursor header of the "
        "previous page); pass an empty value to start a paged export from the beginning.",
    ),
    limit: int | None = Query(
        default=None,
        ge=1,
        le=MAX_PAGE,
        description="Events per page; with `after`, a page (default 1000). Without either, "
        "every event in one response.",
    ),
) -> StreamingResponse:
    require(caller, Role.AUDITOR)
    scope = tenant if caller.tenant == ALL_TENANTS else tenant_for(caller, tenant)
    # Reads are answered before their events' batch is written: write what this process
    # holds first, so the export has every call it answered and the checkpoint covers it.
    await state.run_sync(flush_writers, state.store)
    if state.ledger_key is not None:
        # As `warden ledger export --key`: the heads that moved are signed first, so the
        # export can be verified offline up to its end (GET /v1/ledger/checkpoints).
        out = state.settings.checkpoint_file
        await state.run_sync(
            take_checkpoint,
            state.store,
            state.ledger_key,
            force=False,
            out=None if out is None else Path(out),
        )
    if after is not None or limit is not None:
        try:
            for _ in range(50):  # ~0.5 s; the waits are on the loop, not a store thread
                page = await state.run_sync(
                    functools.partial(
                        export_page,
                        state.store,
                        after=after,
                        limit=limit or 1000,
                        tenant=scope,
                        attempts=1,
                    )
                )
                if not page.busy:
                    break
                await asyncio.sleep(0.01)
        except UsageError as exc:
            raise ApiProblem(
                422,
                "validation",
                str(exc),
                errors=[{"loc": ["query", "after"], "msg": str(exc), "type": "value_error"}],
            ) from None
        query = {"after": page.next, "limit": str(limit or 1000)}
        if tenant is not None:
            query["tenant"] = tenant
        return StreamingResponse(
            page.lines(),
            media_type="application/x-ndjson",
            headers={
                "Warden-Next-Cursor": page.next,
                "Warden-Events": str(len(page.events)),
                "Link": f'</v1/ledger/export?{urlencode(query)}>; rel="next"',
            },
        )

    def lines() -> Iterator[str]:
        import json

        for event in iter_events(state.store, tenant=scope):
            yield json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get(
    "/ledger/checkpoints",
    responses={
        200: {
            "description": "One signed checkpoint per line, oldest first: the file "
            "`warden ledger verify --export FILE --checkpoints FILE` reads",
            "content": {"application/x-ndjson": {}},
        },
        **ERRORS,
    },
    summary="Signed checkpoints of the chain heads, as JSON lines",
    response_class=StreamingResponse,
)
async def ledger_checkpoints(state: State, caller: Caller) -> StreamingResponse:
    require(caller, Role.AUDITOR)
    if caller.tenant != ALL_TENANTS:
        # One signature covers every tenant's heads (stream, tenant, length, hash): a
        # tenant's key would learn the other tenants and their runs.
        raise ApiProblem(
            403,
            "forbidden",
            "checkpoints sign every tenant's chain heads; fetch them with an all-tenant key",
        )
    found = await state.run_sync(stored_checkpoints, state.store)
    return StreamingResponse(
        iter([cp.to_line() + "\n" for cp in found]), media_type="application/x-ndjson"
    )


@router.get("/workflows", response_model=WorkflowList, responses=ERRORS, summary="Loaded workflows")
async def workflows(
    request: Request,
    response: Response,
    state: State,
    caller: Caller,
    after: After = None,
    limit: int = Query(default=500, ge=1, le=500),
) -> WorkflowList:
    items = []
    for name, gateway in sorted(state.gateways.items()):
        spec = gateway.spec.spec
        items.append(
            WorkflowOut(
                name=name,
                version=spec.version,
                description=spec.description,
                owner=spec.owner,
                tier=spec.tier.value,
                fingerprint=gateway.spec.fingerprint,
                policy_fingerprint=gateway.svc.policy.fingerprint,
                tools=gateway.svc.registry.names(),
                rules=gateway.svc.policy.rule_count,
            )
        )
    page, nxt = in_memory_page(items, after, limit, lambda w: (w.name,), 1)
    link_next(request, response, nxt)
    return WorkflowList(items=page, next=nxt)


@router.get(
    "/workflows/{name}/tools",
    response_model=ToolList,
    responses=ERRORS,
    summary="A workflow's tools with their input JSON schemas",
    description="What an agent in any language needs to declare the workflow's tools to its "
    "model: name, description, side-effect class and the JSON Schema the server validates "
    "arguments against. Agent keys read the workflows they may run.",
)
async def workflow_tools(
    state: State,
    caller: Caller,
    name: str = FastApiPath(max_length=120, pattern=ID_PATTERN),
) -> ToolList:
    gateway = state.gateways.get(name)
    if gateway is None or (
        bound_agent(caller) is not None and caller.workflows and name not in caller.workflows
    ):
        # A workflow an agent key may not run is as absent as one that is not loaded.
        raise ApiProblem(404, "not-found", f"no workflow {name!r}")
    items = [
        ToolOut(
            name=t.name,
            description=t.description,
            effect=t.effect.value,
            idempotent=t.idempotent,
            kind=t.kind,
            input_schema=t.input.schema if t.input is not None else {"type": "object"},
            output_schema=None if t.output is None else t.output.schema,
        )
        for t in sorted(gateway.svc.registry, key=lambda t: t.name)
    ]
    return ToolList(workflow=name, items=items)


# -- API keys -------------------------------------------------------------------------

_Name = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9_.:@\-]+$")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = _Name
    role: Literal["admin", "approver", "agent", "auditor"]
    tenant: str | None = Field(
        default=None,
        min_length=1,
        max_length=120,
        pattern=r"^(\*|[A-Za-z0-9_.:@\-]+)$",
        description="default: the calling key's tenant; '*' (admin keys, by an all-tenant admin)",
    )
    agent: str | None = Field(
        default=None, min_length=1, max_length=120, description="agent keys: the agent it acts as"
    )
    workflows: list[str] = Field(
        default_factory=list, max_length=100, description="agent keys: the workflows it may run"
    )
    approval_roles: list[str] = Field(
        default_factory=list, max_length=100, description="approver/admin keys: roles it decides"
    )
    bridge: bool = Field(
        default=False, description="approver/admin keys: may decide on behalf of a named person"
    )
    expires_in_s: int | None = Field(default=None, ge=60, le=10 * 365 * 86400)


class KeyOut(BaseModel):
    key_id: str
    name: str
    role: str
    tenant: str
    agent: str | None
    workflows: list[str]
    approval_roles: list[str]
    bridge: bool
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, info: KeyInfo) -> KeyOut:
        return cls(
            key_id=info.key_id,
            name=info.name,
            role=info.role.value,
            tenant=info.tenant,
            agent=info.agent,
            workflows=list(info.workflows),
            approval_roles=list(info.approval_roles),
            bridge=info.bridge,
            created_at=info.created_at,
            created_by=info.created_by,
            expires_at=info.expires_at,
            revoked_at=info.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str = Field(description="the full key: shown once, stored only as a hash")


class KeyList(BaseModel):
    items: list[KeyOut]
    next: str | None = Field(
        default=None, description="Cursor of the next page (pass as `after`); null on the last"
    )


@router.post(
    "/keys",
    status_code=201,
    response_model=KeyCreated,
    responses=ERRORS,
    summary="Create an API key (admins; the key is in this answer only)",
)
async def create_key(body: KeyCreate, state: State, caller: Caller) -> KeyCreated:
    require(caller)  # admins only
    if body.tenant == ALL_TENANTS:
        if caller.tenant != ALL_TENANTS:
            raise ApiProblem(403, "forbidden", "only an all-tenant admin key makes '*' keys")
        tenant = ALL_TENANTS
    else:
        tenant = tenant_for(caller, body.tenant)
    try:
        info, key = state.keys.create(
            name=body.name,
            role=body.role,
            tenant=tenant,
            created_by=caller.identity,
            expires_in=None if body.expires_in_s is None else timedelta(seconds=body.expires_in_s),
            agent=body.agent,
            workflows=body.workflows,
            approval_roles=body.approval_roles,
            bridge=body.bridge,
        )
    except UsageError as exc:  # a binding that does not fit the role
        raise ApiProblem(422, "validation", str(exc)) from None
    return KeyCreated(**KeyOut.of(info).model_dump(), key=key)


@router.get("/keys", response_model=KeyList, responses=ERRORS, summary="List API keys (admins)")
async def list_keys(
    request: Request,
    response: Response,
    state: State,
    caller: Caller,
    after: After = None,
    limit: int = Query(default=500, ge=1, le=500),
) -> KeyList:
    require(caller)
    scope = None if caller.tenant == ALL_TENANTS else caller.tenant
    items = [KeyOut.of(k) for k in await state.run_sync(state.keys.list, tenant=scope)]
    page, nxt = in_memory_page(
        items, after, limit, lambda k: (k.created_at.isoformat(), k.key_id), 2
    )
    link_next(request, response, nxt)
    return KeyList(items=page, next=nxt)


@router.post(
    "/keys/{key_id}/revoke",
    response_model=KeyOut,
    responses=ERRORS,
    summary="Revoke an API key (admins); every replica refuses it within the key cache time",
)
async def revoke_key(key_id: str, state: State, caller: Caller) -> KeyOut:
    require(caller)
    try:
        found = state.keys.get(key_id)
    except NotFoundError:
        raise ApiProblem(404, "not-found", f"no key {key_id!r}") from None
    visible(caller, found.tenant, f"key {key_id!r}")
    return KeyOut.of(state.keys.revoke(key_id))
