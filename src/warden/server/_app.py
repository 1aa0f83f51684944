"""The FastAPI application: routers, problem details, body limit, background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warden.ledger import checkpoint_loop, key_path, load_private_key
from warden.notify import Dispatcher
from warden.server import _problems
from warden.server._bodies import JsonBodyCheck
from warden.server._deps import Refused, State
from warden.server._fastpath import GovernedCallFastPath
from warden.server._paging import reject_unknown_query
from warden.server._problems import Problem, problem_response
from warden.server._schemas import Health
from warden.server._settings import ServerSettings
from warden.server._state import ServerState
from warden.server.api import (
    admin,
    approvals,
    costs,
    dashboard,
    explain,
    metrics,
    models,
    replicas,
    runs,
    slo,
)
from warden.server.ui import router as console_router
from warden.store._retention import prune_loop
from warden.telemetry import Telemetry, TraceContextMiddleware

log = logging.getLogger("warden.server")


class BodyLimit:
    """Refuse request bodies over the limit with 413, whether or not they declare a length,
    and bodies that have not fully arrived ``timeout_s`` after the request began with 408.

    The refusal is raised from inside ``receive``, so whatever reads the body stops there;
    FastAPI turns any error while reading a body into its own 400, so the answers of the
    app are dropped once a refusal is due, and the refusal is sent in their place.
    """

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float = 0.0) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large()(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s if self.timeout_s else None
        seen = 0
        complete = False
        refusal: JSONResponse | None = None
        started = False

        async def checked() -> Message:
            nonlocal seen, complete, refusal
            if complete:  # what is left to receive is the disconnect, which may take long
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                refusal = problem_response(
                    408,
                    "request-timeout",
                    f"the request body did not arrive within {self.timeout_s:g} s",
                    headers={"Connection": "close"},
                )
                raise _Refused from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refusal = self._too_large()
                    raise _Refused
                complete = not message.get("more_body", False)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if refusal is not None:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, checked, sending)
        except Exception:
            if refusal is None:
                raise
        if refusal is not None and not started:
            await refusal(scope, receive, send)

    def _too_large(self) -> JSONResponse:
        return problem_response(
            413,
            "payload-too-large",
            f"request bodies are limited to {self.limit} bytes",
            headers={"Connection": "close"},
        )


class _Refused(Exception):
    pass


async def _sla_loop(state: ServerState, interval_s: float) -> None:
    """Apply timeout fallbacks; any replica may do it, transitions are conditional."""
    while True:
        await asyncio.sleep(interval_s)
        for gateway in state.gateways.values():
            try:
                await state.run_sync(gateway.expire_overdue)
            except Exception:
                log.exception("SLA sweep failed; will retry")


async def _alert_loop(state: ServerState, interval_s: float) -> None:
    """Time-based alerts (warden.telemetry.Alerts.evaluate); changes are conditional, so
    every replica may run it."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await state.run_sync(state.alerts.evaluate)
        except Exception:
            log.exception("alert evaluation failed; will retry")


def create_app(
    settings: ServerSettings | None = None, *, telemetry: Telemetry | None = None
) -> FastAPI:
    """``telemetry``: traces and metrics of the app (default: as the settings and the
    ``OTEL_*`` variables say; tests pass an in-memory exporter)."""
    settings = settings or ServerSettings()
    warden_state = ServerState(settings, telemetry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Every worker is in the replica registry (GET /v1/replicas): its switch board's
        # refresh thread says when it last read the switches.
        await warden_state.run_sync(warden_state.switches.register, "serve")
        tasks = [
            asyncio.create_task(_sla_loop(warden_state, settings.sla_sweep_s)),
            asyncio.create_task(_alert_loop(warden_state, settings.alert_interval_s)),
        ]
        stop = asyncio.Event()
        dispatcher = None
        if warden_state.webhooks:
            dispatcher = Dispatcher(warden_state.store, warden_state.webhooks, warden_state.secrets)
            tasks.append(asyncio.create_task(dispatcher.run_forever(stop)))
        signing = key_path(settings.ledger_key)
        if signing is not None:
            # Signed checkpoints of the chain heads: a rewrite of the store before the last
            # one is detected even by someone who can rewrite it consistently.
            key = warden_state.ledger_key = load_private_key(signing)
            out = Path(settings.checkpoint_file) if settings.checkpoint_file else None
            tasks.append(
                asyncio.create_task(
                    checkpoint_loop(
                        warden_state.store, key, settings.checkpoint_s, out=out, stop=stop
                    )
                )
            )
        if settings.retention.prune_every_s > 0:
            # Window entries, settled idempotency records and delivered notifications past
            # their use (store._retention); entries of the longest loaded window are kept.
            periods = [
                w.period
                for gateway in warden_state.gateways.values()
                for w in gateway.spec.spec.windows.values()
            ]
            tasks.append(
                asyncio.create_task(
                    prune_loop(
                        warden_state.store,
                        settings.retention,
                        window_keep=max(periods, default=None),
                        stop=stop,
                    )
                )
            )
        try:
            yield
        finally:
            stop.set()
            if dispatcher is not None:
                await dispatcher.aclose()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for gateway in warden_state.gateways.values():
                if gateway.svc.models is not None:  # the upstreams' connections of this loop
                    await gateway.svc.models.aclose()
            # In-flight requests have finished (uvicorn drains them first): flush what
            # they buffered, durably, before the process goes.
            warden_state.close()

    app = FastAPI(
        title="Warden control plane",
        version="1",
        description="Governed tool and model calls over HTTP: runs, actions, approvals, kill "
        "switches, ledger, and an OpenAI- and Anthropic-compatible model proxy.",
        lifespan=lifespan,
        # A misspelt filter must not silently widen a list: unknown query parameters are 422.
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.warden = warden_state
    _problems.install(app)

    async def refused(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        warden_state.refused(exc.principal, exc.detail)
        return _problems.response_for(exc)

    app.add_exception_handler(Refused, refused)
    # The last added runs first: the body limit and timeout see every byte, then the fast
    # path serves what it can, then every route's JSON body is checked.
    app.add_middleware(JsonBodyCheck)
    if settings.fast_path:
        app.add_middleware(GovernedCallFastPath)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    if warden_state.telemetry.traces is not None:  # outermost: the fast path's calls too
        app.add_middleware(TraceContextMiddleware)
    app.include_router(runs.router)
    app.include_router(approvals.router)
    app.include_router(admin.router)
    app.include_router(explain.router)
    app.include_router(models.router)
    app.include_router(costs.router)
    app.include_router(metrics.router)
    app.include_router(slo.router)
    app.include_router(replicas.router)
    app.include_router(dashboard.router)
    app.include_router(console_router)  # the operator console, /ui

    @app.get("/healthz", response_model=Health, tags=["health"], summary="The process is up")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        summary="The store answers and its schema is current",
        responses=_problems.problem_responses(503),
    )
    async def readyz(state: State) -> Any:
        try:
            await state.run_sync(state.store.check_schema)
        except Exception as exc:
            return problem_response(503, "not-ready", str(exc))
        return Health(status="ok")

    _register_problem_schema(app)
    return app


def _register_problem_schema(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
            Problem.model_json_schema()
        )
        # FastAPI documents its own 422 as application/json; ours are problem+json.
        for path in schema.get("paths", {}).values():
            for op in path.values():
                resp = op.get("responses", {}).get("422")
                if resp and "application/json" in resp.get("content", {}):
                    resp["content"] = {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_factory() -> FastAPI:
    """For uvicorn workers: configuration comes from WARDEN_* variables."""
    return create_app(ServerSettings())


__all__ = ["JSONResponse", "create_app"]
