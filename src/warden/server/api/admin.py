"""Kill switches, the ledger, loaded workflows."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from warden.auth import ALL_TENANTS, Role
from warden.ledger import iter_events, verify
from warden.pipeline import Scope
from warden.server._deps import Caller, State, require, tenant_for
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
    VerifyOut,
    WorkflowList,
    WorkflowOut,
)

router = APIRouter(prefix="/v1", tags=["operations"])
ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)


@router.get("/switches", response_model=SwitchList, responses=ERRORS, summary="List kill switches")
async def list_switches(state: State, caller: Caller) -> SwitchList:
    items = [
        SwitchOut.of(s)
        for s in state.switches.list()
        if caller.tenant == ALL_TENANTS or s.scope is not Scope.TENANT or s.target == caller.tenant
    ]
    return SwitchList(items=items)


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
    switch = state.switches.set(
        body.scope, target, active=body.active, by=caller.identity, reason=body.reason
    )
    state.ledger.flush(durable=True)
    return SwitchOut.of(switch)


@router.get(
    "/ledger/runs/{run_id}/events",
    response_model=EventList,
    responses=ERRORS,
    summary="A run's events",
)
async def run_events(run_id: RunId, state: State, caller: Caller) -> EventList:
    tenant = None if caller.tenant == ALL_TENANTS else caller.tenant
    for gateway in state.gateways.values():
        gateway.flush()
    events = [
        EventOut(**e.to_json()) for e in iter_events(state.store, run_id=run_id, tenant=tenant)
    ]
    if not events:
        raise ApiProblem(404, "not-found", f"no events for run {run_id!r}")
    return EventList(items=events)


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
    report = verify(state.store, tenant=scope)
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
) -> StreamingResponse:
    require(caller, Role.AUDITOR)
    scope = tenant if caller.tenant == ALL_TENANTS else tenant_for(caller, tenant)

    def lines() -> Iterator[str]:
        import json

        for event in iter_events(state.store, tenant=scope):
            yield json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/workflows", response_model=WorkflowList, responses=ERRORS, summary="Loaded workflows")
async def workflows(state: State, caller: Caller) -> WorkflowList:
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
    return WorkflowList(items=items)
