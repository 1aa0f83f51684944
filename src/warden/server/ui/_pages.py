"""Sign-in and sign-out, runs and the explain view, kill switches, the ledger, costs."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from warden.auth import ALL_TENANTS, Role
from warden.economics import parse_since
from warden.errors import InvalidInputError, WardenError
from warden.pipeline._replicas import Replica, live_replicas
from warden.server._deps import State, principal_for, require
from warden.server._problems import ApiProblem
from warden.server._schemas import ID_PATTERN, RunOut, SwitchOut, SwitchSet
from warden.server.api import admin, costs, explain, runs
from warden.server.ui import _views
from warden.server.ui._core import (
    HERE,
    Console,
    ConsoleDep,
    ConsoleRoute,
    field,
    form_of,
    problem_of,
    safe_next,
    sessions,
    templates,
)
from warden.server.ui._session import (
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    SESSION_S,
    clear_cookie,
    set_cookie,
)

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)

RunIdParam = PathParam(min_length=1, max_length=40, pattern=ID_PATTERN)


def _id() -> Any:
    # One Query per parameter: FastAPI binds a shared one to a single parameter only.
    return Query(default=None, max_length=120, pattern=ID_PATTERN)


#: files under static/, served by name only (nothing else on disk is reachable)
STATIC = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "htmx.LICENSE": "text/plain; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise ApiProblem(404, "not-found", f"no static file {name!r}")
    return Response(
        (HERE / "static" / name).read_bytes(),
        media_type=STATIC[name],
        headers={"Cache-Control": "public, max-age=3600"},
    )


# -- sign-in --------------------------------------------------------------------------------


def _signin_page(request: Request, status: int = 200, message: str = "") -> HTMLResponse:
    # Kept while it lasts: a second sign-in tab must not void the first one's token.
    pre = request.cookies.get(PRESESSION_COOKIE, "")
    if not 16 <= len(pre) <= 64:
        pre = secrets.token_urlsafe(18)
    response = templates.TemplateResponse(
        request,
        "signin.html",
        {
            "me": None,
            "csrf": sessions(request).csrf_for("pre:" + pre),
            "next": safe_next(request.query_params.get("next")),
            "message": message,
        },
        status_code=status,
    )
    set_cookie(request, response, PRESESSION_COOKIE, pre, max_age=3600)
    return response


@router.get("/signin", response_class=HTMLResponse)
async def signin_form(request: Request) -> HTMLResponse:
    return _signin_page(request)


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request, state: State) -> Response:
    """The API key is checked as the API checks it (``principal_for``: known, not revoked or
    expired, within its rate limit) and then forgotten: the cookie holds the key's id."""
    key = field(form_of(request), "key").strip()
    try:
        principal = await state.run_sync(principal_for, state, "", key)
    except ApiProblem as exc:
        return _signin_page(request, exc.status, exc.detail)
    cookie, _ = sessions(request).issue(principal.key_id)
    target = safe_next(field(form_of(request), "next"))
    response = RedirectResponse(target, status_code=303)
    set_cookie(request, response, SESSION_COOKIE, cookie, max_age=SESSION_S)
    clear_cookie(request, response, PRESESSION_COOKIE)
    return response


@router.post("/signout")
async def signout(ui: ConsoleDep, request: Request) -> Response:
    sessions(request).end(ui.session)
    response = RedirectResponse("/ui/signin", status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    return response


# -- runs -----------------------------------------------------------------------------------


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(
    ui: ConsoleDep,
    workflow: str | None = _id(),
    tenant: str | None = _id(),
    outcome: str | None = Query(
        default=None, pattern="^(running|completed|failed|abandoned|escalated)$"
    ),
    rule: str | None = _id(),
    since: str | None = Query(default=None, max_length=20),
) -> HTMLResponse:
    listed = await runs.list_runs(
        ui.request,
        Response(),
        ui.state,
        ui.principal,
        tenant=tenant,
        workflow=workflow,
        status=None,
        limit=500,
        after=None,
    )
    items = listed.items
    error = ""
    if since:
        try:
            start = datetime.now(UTC) - parse_since(since)
            items = [r for r in items if r.started_at >= start]
        except InvalidInputError as exc:
            error = str(exc)
    if outcome == "running":
        items = [r for r in items if r.status == "running"]
    elif outcome:
        items = [r for r in items if r.outcome == outcome]
    if rule:
        # Read per listed run (the same scoped read as the run page), at most 100 runs.
        matched = []
        for run in items[:100]:
            steps = await _steps(ui, run.run_id)
            if any(rule in ((s.decision or {}).get("matched") or []) for s in steps.steps):
                matched.append(run)
        items = matched
    filters = {"workflow": workflow, "tenant": tenant, "outcome": outcome, "rule": rule, "since": since}
    return ui.page(
        "runs.html",
        422 if error else 200,
        items=items,
        filters=filters,
        error=error,
        workflows=ui.state.workflow_names,
    )


async def _steps(ui: Console, run_id: str) -> _views.Timeline:
    try:
        listed = await admin.run_events(
            run_id, ui.request, Response(), ui.state, ui.principal, None, 5000
        )
        events = listed.items
    except ApiProblem as exc:
        if exc.status != 404:
            raise
        events = []  # a run with no call yet has no events of its own
    return _views.timeline([e.model_dump() for e in events])


async def _run_view(ui: Console, run_id: str) -> tuple[RunOut, _views.Timeline]:
    run = await runs.get_run(run_id, ui.state, ui.principal)
    found = await _steps(ui, run_id)
    for step in found.steps:
        if step.decision is None or step.step < 1:
            continue
        try:
            explained = await explain.explain_action(run_id, ui.state, ui.principal, step=step.step)
            step.explanation = explained.model_dump()
        except (ApiProblem, WardenError) as exc:
            step.explain_error = problem_of(exc)[2]
    return run, found


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(ui: ConsoleDep, run_id: str = RunIdParam) -> HTMLResponse:
    run, found = await _run_view(ui, run_id)
    return ui.page("run.html", run=run, tl=found)


def _export(run: RunOut, found: _views.Timeline) -> dict[str, Any]:
    return {
        "run": run.model_dump(mode="json"),
        "cost_usd": str(found.cost_usd),
        "steps": [
            {
                "step": s.step,
                "action_id": s.action_id,
                "tool": s.tool,
                "args": s.args,
                "proposed_by": s.proposed_by,
                "agent_rationale": s.rationale,
                "requested_at": s.at,
                "outcome": s.outcome,
                "detail": s.detail,
                "attempts": s.attempts,
                "ms": s.ms,
                "cost_usd": None if s.cost_usd is None else str(s.cost_usd),
                "untrusted_args": s.untrusted,
                "decision": s.decision,
                "explanation": s.explanation,
                "explain_error": s.explain_error,
                "approvals": s.approvals,
                "resumed": s.resumed,
            }
            for s in found.steps
        ],
    }


@router.get("/runs/{run_id}/export.json")
async def run_json(ui: ConsoleDep, run_id: str = RunIdParam) -> Response:
    run, found = await _run_view(ui, run_id)
    return Response(
        json.dumps(_export(run, found), indent=2, ensure_ascii=False, default=str),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{run_id}.json"'},
    )


@router.get("/runs/{run_id}/report.html", response_class=HTMLResponse)
async def run_report(ui: ConsoleDep, run_id: str = RunIdParam) -> HTMLResponse:
    """One file a customer can open anywhere: its styles inline, no script, no link out."""
    run, found = await _run_view(ui, run_id)
    response = ui.page(
        "report.html",
        run=run,
        tl=found,
        css=(HERE / "static" / "console.css").read_text(encoding="utf-8"),
        generated=datetime.now(UTC),
    )
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{run_id}-report.html"'
    return response


# -- kill switches --------------------------------------------------------------------------


async def _switches(ui: Console) -> tuple[list[SwitchOut], list[Replica]]:
    """The switches the key may see (each with the live replicas that have read it) and
    the live replicas, for admin and auditor keys (as ``GET /v1/replicas``)."""
    listed = await admin.list_switches(ui.request, Response(), ui.state, ui.principal, None, 500)
    live: list[Replica] = []
    if ui.principal.role in (Role.ADMIN, Role.AUDITOR):
        live = await ui.state.run_sync(
            live_replicas, ui.state.store, ui.state.settings.replica_live_s
        )
    return listed.items, live


def _switches_page(
    ui: Console,
    items: list[SwitchOut],
    live: list[Replica],
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    settings = ui.state.settings
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return ui.page(
        "switches.html",
        status,
        items=items,
        live=live,
        live_s=settings.replica_live_s,
        refresh_s=settings.switch_refresh_s,
        **context,
    )


def _find(items: list[SwitchOut], scope: str | None, target: str | None) -> SwitchOut | None:
    wanted = (scope, "*" if scope == "global" else target)
    return next((s for s in items if (s.scope, s.target) == wanted), None)


@router.get("/switches", response_class=HTMLResponse)
async def switches_page(
    ui: ConsoleDep,
    scope: str | None = Query(default=None, max_length=20),
    target: str | None = _id(),
) -> HTMLResponse:
    """Every switch, each with the live replicas that have read it; with ``scope`` and
    ``target``, that switch's status on top (the no-JavaScript way to follow a flip)."""
    items, live = await _switches(ui)
    return _switches_page(ui, items, live, sw=_find(items, scope, target))


@router.get("/switches/seen", response_class=HTMLResponse)
async def switch_seen(
    ui: ConsoleDep,
    scope: str | None = Query(default=None, max_length=20),
    target: str | None = _id(),
) -> HTMLResponse:
    """Which live replicas have read one switch: the block htmx polls after a flip (it
    stops polling once none is waited for)."""
    items, _ = await _switches(ui)
    found = _find(items, scope, target)
    if found is None:
        raise ApiProblem(404, "not-found", "no such switch")
    return ui.page("_switch_seen.html", sw=found)


@router.post("/switches", response_class=HTMLResponse)
async def flip(ui: ConsoleDep, request: Request) -> Response:
    """Two steps: the form shows what will change and asks to confirm; the confirmed form
    flips the switch through the API's own route (admins only, scoped as there)."""
    require(ui.principal)  # admins only: refused before the confirmation, not after
    form = form_of(request)
    values = {k: field(form, k) for k in ("scope", "target", "active", "reason")}
    try:
        body = SwitchSet(
            scope=values["scope"],
            target=values["target"] or None,
            active=values["active"] == "on",
            reason=values["reason"].strip(),
        )
    except ValidationError as exc:
        errors = {str(e["loc"][0]) if e["loc"] else "": e["msg"] for e in exc.errors()}
        items, live = await _switches(ui)
        return _switches_page(ui, items, live, 422, errors=errors, values=values)
    if field(form, "confirm") != "yes":
        return ui.page("switch_confirm.html", body=body)
    changed = await admin.set_switch(body, ui.state, ui.principal)
    target = "" if changed.target == "*" else f" {changed.target}"
    state = "on" if changed.active else "off"
    items, live = await _switches(ui)
    return _switches_page(
        ui,
        items,
        live,
        done=f"{changed.scope}{target} switch is {state}",
        sw=_find(items, changed.scope, changed.target),
    )


# -- ledger ---------------------------------------------------------------------------------


@router.get("/ledger", response_class=HTMLResponse)
async def ledger_page(ui: ConsoleDep) -> HTMLResponse:
    report = await admin.verify_ledger(ui.state, ui.principal, tenant=None)
    checkpoint: dict[str, Any] | None = None
    checkpoint_note = ""
    if ui.state.ledger_key is None:
        checkpoint_note = "this server signs no checkpoints (start it with --ledger-key)"
    elif ui.principal.tenant != ALL_TENANTS:
        checkpoint_note = "signed checkpoints cover every tenant: an all-tenant key reads them"
    else:
        stream = await admin.ledger_checkpoints(ui.state, ui.principal)
        last = ""
        async for line in stream.body_iterator:
            last = line if isinstance(line, str) else bytes(line).decode()
        if last:
            data = json.loads(last)
            fields = json.loads(data["body"])
            checkpoint = {
                "n": data["n"],
                "at": fields.get("at") or fields.get("created_at"),
                "heads": len(fields.get("heads", [])),
                "public_key": fields.get("public_key", ""),
                "signature": data["signature"],
            }
        else:
            checkpoint_note = "no checkpoint signed yet"
    return ui.page("ledger.html", report=report, checkpoint=checkpoint, note=checkpoint_note)


@router.get("/ledger/export")
async def ledger_export(ui: ConsoleDep) -> Response:
    response = await admin.export_ledger(ui.state, ui.principal, tenant=None, after=None, limit=None)
    response.headers["Content-Disposition"] = 'attachment; filename="warden-ledger.jsonl"'
    return response


# -- costs (the dashboards' place until they are built) -------------------------------------


@router.get("/costs", response_class=HTMLResponse)
async def costs_page(
    ui: ConsoleDep,
    since: str = Query(default="7d", max_length=20),
    by: str = Query(default="workflow", max_length=100),
) -> HTMLResponse:
    report = await costs.costs(ui.state, ui.principal, since=since, by=by, tenant=None)
    groups = report.groups
    top = max((float(g.current.cost_usd) for g in groups), default=0.0)
    return ui.page("costs.html", report=report, top=top, since=since, by=by)


__all__ = ["router"]
