"""``GET /metrics``: Prometheus metrics of the server (every worker's) and its store."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from warden.auth import Role
from warden.server._deps import State, caller_for, require
from warden.server._problems import ApiProblem
from warden.telemetry import scrape

router = APIRouter(tags=["health"])

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request, state: State) -> Response:
    """Counters and histograms of every worker, and gauges read from the store.

    Who may scrape is the ``metrics_access`` setting: ``loopback`` (default) lets clients
    on this host in without a key and asks others for an admin or auditor key; ``key``
    always asks for one; ``open`` lets anyone in."""
    telemetry = state.telemetry
    if telemetry.metrics is None:
        raise ApiProblem(404, "not-found", "metrics are off (WARDEN_METRICS=false)")
    access = state.settings.metrics_access
    host = request.client.host if request.client is not None else ""
    if access == "key" or (access == "loopback" and host not in _LOOPBACK):
        headers = request.headers
        caller = await caller_for(
            state, headers.get("authorization", ""), headers.get("x-api-key", "")
        )
        require(caller, Role.AUDITOR)
    body, content_type = await state.run_sync(
        scrape, telemetry.metrics, telemetry.collector(state.store)
    )
    return Response(body, media_type=content_type)
