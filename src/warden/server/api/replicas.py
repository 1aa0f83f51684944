"""The replica registry: the processes serving this store and what they last read."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request, Response

from warden.auth import Role
from warden.pipeline._replicas import list_replicas
from warden.server._deps import Caller, State, require
from warden.server._paging import After, in_memory_page, link_next
from warden.server._problems import problem_responses
from warden.server._schemas import ReplicaList, ReplicaOut

router = APIRouter(prefix="/v1", tags=["operations"])
ERRORS = problem_responses(400, 401, 403, 422, 429, 503)


@router.get(
    "/replicas",
    response_model=ReplicaList,
    responses=ERRORS,
    summary="Registered replicas (admins, auditors)",
)
async def get_replicas(
    request: Request,
    response: Response,
    state: State,
    caller: Caller,
    after: After = None,
    limit: int = Query(default=500, ge=1, le=500),
    live: bool | None = Query(
        default=None, description="Only live replicas (true) or only the others (false)"
    ),
) -> ReplicaList:
    """Every process registered on this store (each ``warden serve`` worker; SDK gateways
    that registered), by host and pid: when it was last seen, when it last read the kill
    switches, and whether it is live (seen within ``replica_live_s``). Rows unseen for an
    hour are pruned."""
    require(caller, Role.AUDITOR)
    live_s = state.settings.replica_live_s
    now = datetime.now(UTC)
    items = [
        ReplicaOut.of(r, r.live(now, live_s))
        for r in await state.run_sync(list_replicas, state.store)
    ]
    if live is not None:
        items = [r for r in items if r.live is live]
    page, nxt = in_memory_page(
        items, after, limit, lambda r: (r.host, f"{r.pid:010d}", r.replica_id), 3
    )
    link_next(request, response, nxt)
    return ReplicaList(items=page, live_s=live_s, next=nxt)
