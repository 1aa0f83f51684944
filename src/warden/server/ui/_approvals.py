"""The approval queue: list, one item with its evidence, decide, batch, live updates."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError

from warden.auth import Role
from warden.errors import WardenError
from warden.server._deps import require
from warden.server._problems import ApiProblem
from warden.server._schemas import ID_PATTERN, ApprovalDecision, ApprovalOut
from warden.server.api import admin, approvals
from warden.server.ui import _views
from warden.server.ui._core import (
    Console,
    ConsoleDep,
    ConsoleRoute,
    field,
    form_of,
    problem_of,
    templates,
)

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)

#: the most the queue shows (the API's own limit), soonest deadline first
QUEUE_LIMIT = 500
ApprovalIdParam = PathParam(min_length=1, max_length=40, pattern=ID_PATTERN)
#: how long one live-update stream stays open (the browser reconnects): a server that
#: shuts down waits for open responses, so none may stay open for long
STREAM_S = 10.0
#: new approvals are not announced to waiters: the stream looks for them this often
NEW_ITEMS_S = 2.0


async def _queue(ui: Console, *, suggest: bool = True) -> list[ApprovalOut]:
    listed = await approvals.list_approvals(
        ui.request,
        Response(),
        ui.state,
        ui.principal,
        tenant=None,
        role=None,
        sla_class=None,
        approval_state="pending",
        min_age_s=None,
        limit=QUEUE_LIMIT,
        after=None,
        suggest=suggest,
    )
    return sorted(listed.items, key=lambda a: a.deadline)


def _batchable(items: list[ApprovalOut]) -> set[str]:
    """Approvals that may be decided together: low risk, and another of the same rules."""
    by_rules: dict[tuple[str, ...], list[str]] = {}
    for item in items:
        if item.risk <= _views.LOW_RISK:
            by_rules.setdefault(tuple(item.rules), []).append(item.approval_id)
    return {i for ids in by_rules.values() if len(ids) > 1 for i in ids}


async def _rows(ui: Console) -> dict[str, Any]:
    items = await _queue(ui)
    rows = _views.queue_rows(items, _batchable(items), datetime.now(UTC))
    return {"rows": rows, "limit": QUEUE_LIMIT}


@router.get("", response_class=HTMLResponse)
async def home() -> RedirectResponse:
    return RedirectResponse("/ui/approvals", status_code=303)


@router.get("/approvals", response_class=HTMLResponse)
async def queue_page(ui: ConsoleDep, request: Request) -> HTMLResponse:
    return ui.page(
        "approvals.html", **await _rows(ui), done=request.query_params.get("done", "")
    )


@router.get("/approvals/queue", response_class=HTMLResponse)
async def queue_partial(ui: ConsoleDep) -> HTMLResponse:
    """The queue's table alone, for htmx to swap in when the queue changed."""
    return ui.page("_queue.html", **await _rows(ui))


@router.get("/approvals/events")
async def queue_events(ui: ConsoleDep, request: Request) -> StreamingResponse:
    """Server-sent events: ``queue`` whenever the visible pending queue changes.

    Decisions wake the stream at once through the server's ``ApprovalWaiter`` (here or on
    any replica); new approvals are looked for every ``NEW_ITEMS_S``.
    """

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        until = loop.time() + STREAM_S
        yield "retry: 1000\n\n"
        seen: tuple[str, ...] | None = None
        while loop.time() < until and not await request.is_disconnected():
            try:
                items = await _queue(ui, suggest=False)  # only which items, not what they say
            except (ApiProblem, WardenError):
                return
            now = tuple(sorted(f"{a.approval_id}:{a.escalation_level}" for a in items))
            if seen is not None and now != seen:
                yield f"event: queue\ndata: {len(items)}\n\n"
            seen = now
            await _changed([a.approval_id for a in items[:50]], ui, NEW_ITEMS_S)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _changed(ids: list[str], ui: Console, timeout_s: float) -> None:
    """Return when one of ``ids`` may have changed, or after ``timeout_s``."""
    async with contextlib.AsyncExitStack() as stack:
        watches = [await stack.enter_async_context(ui.state.waiter.watch(i)) for i in ids]
        if not watches:
            await asyncio.sleep(timeout_s)
            return
        waits = [asyncio.ensure_future(w.changed(timeout_s)) for w in watches]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)


async def _detail(ui: Console, approval_id: str) -> dict[str, Any]:
    record = await approvals.get_approval(approval_id, ui.state, ui.principal)
    try:
        listed = await admin.run_events(
            record.run_id, ui.request, Response(), ui.state, ui.principal, None, 5000
        )
        events = listed.items
    except ApiProblem:
        events = []
    steps = _views.timeline([e.model_dump() for e in events]).steps
    this_step = next((s for s in steps if s.action_id == record.action_id), None)
    gateway = ui.state.gateways.get(record.workflow)
    tool = gateway.svc.registry.get(record.tool) if gateway is not None else None
    schema = (tool.input.schema if tool is not None and tool.input is not None else {}) or {}
    return {
        "item": record,
        "earlier": [s for s in steps if s.action_id != record.action_id and (
            this_step is None or s.step < this_step.step)],
        "untrusted": _views.untrusted_args(record.evidence),
        "origins": _views.origins(record.evidence),
        "properties": schema.get("properties", {}),
        "required": set(schema.get("required", [])),
        "validator": tool.input if tool is not None else None,
    }


@router.get("/approvals/{approval_id}", response_class=HTMLResponse)
async def approval_page(
    ui: ConsoleDep, approval_id: str = ApprovalIdParam
) -> HTMLResponse:
    detail = await _detail(ui, approval_id)
    return ui.page("approval.html", **detail, errors={}, values={}, message="", editing=False)


@router.post("/approvals/{approval_id}/decide", response_class=HTMLResponse)
async def decide(
    ui: ConsoleDep, request: Request, approval_id: str = ApprovalIdParam
) -> Response:
    form = form_of(request)
    detail = await _detail(ui, approval_id)
    record: ApprovalOut = detail["item"]
    choice = field(form, "decision")
    rationale = field(form, "rationale").strip()
    errors: dict[str, str] = {}
    args: dict[str, Any] | None = None
    if choice not in ("approve", "reject", "edit"):
        errors["decision"] = "choose approve, reject or approve with edits"
    if not rationale:
        errors["rationale"] = "say why: the rationale is recorded with the decision"
    if choice == "edit":
        args = _views.edited_args(form, record.args)
        errors.update(_views.schema_errors(detail["validator"], args))
    if not errors:
        try:
            body = ApprovalDecision(
                decision="reject" if choice == "reject" else "approve",
                rationale=rationale,
                args=args,
            )
        except ValidationError as exc:
            errors["rationale"] = "; ".join(e["msg"] for e in exc.errors())
    if errors:
        return _again(ui, detail, form, errors, "", 422, editing=choice == "edit")
    try:
        decided = await approvals.decide(
            approval_id, body, ui.state, ui.principal, on_behalf_of_header=None
        )
    except (ApiProblem, WardenError) as exc:
        status, _, message = problem_of(exc)
        return _again(ui, detail, form, {}, message, status, editing=choice == "edit")
    query = urlencode({"done": f"{decided.state} {decided.approval_id}"})
    return RedirectResponse(f"/ui/approvals?{query}", status_code=303)


@router.post("/approvals/{approval_id}/check", response_class=HTMLResponse)
async def check_field(
    ui: ConsoleDep,
    request: Request,
    approval_id: str = ApprovalIdParam,
    name: str = Query(alias="field", min_length=1, max_length=200),
) -> HTMLResponse:
    """Edited arguments checked as they are typed (htmx): the error of one field, or none.
    The same check as on submit; nothing is decided."""
    detail = await _detail(ui, approval_id)
    record: ApprovalOut = detail["item"]
    args = _views.edited_args(form_of(request), record.args)
    errors = _views.schema_errors(detail["validator"], args)
    return ui.page("_field_error.html", k=name, errors=errors)


def _again(
    ui: Console,
    detail: dict[str, Any],
    form: dict[str, list[str]],
    errors: dict[str, str],
    message: str,
    status: int,
    *,
    editing: bool,
) -> HTMLResponse:
    values = {k: v[-1] for k, v in form.items() if k != "csrf"}
    return ui.page(
        "approval.html",
        status,
        **detail,
        errors=errors,
        values=values,
        message=message,
        editing=editing,
    )


@router.post("/approvals/batch", response_class=HTMLResponse)
async def batch(ui: ConsoleDep, request: Request) -> Response:
    """Several approvals of the same rules and low risk, decided with one rationale, each
    recorded one by one (each through the API's own decision)."""
    require(ui.principal, Role.APPROVER)  # as each decision would: refused before any
    form = form_of(request)
    ids = list(dict.fromkeys(form.get("ids", [])))
    choice = field(form, "decision")
    rationale = field(form, "rationale").strip()
    problems: list[str] = []
    if not ids:
        problems.append("select the approvals to decide")
    if len(ids) > 100:
        problems.append("decide at most 100 approvals at once")
    if choice not in ("approve", "reject"):
        problems.append("choose approve or reject")
    if not rationale:
        problems.append("say why: the rationale is recorded with every decision")
    records: list[ApprovalOut] = []
    if not problems:
        for approval_id in ids:
            if not approval_id or len(approval_id) > 40:
                problems.append(f"no approval {approval_id!r}")
                continue
            records.append(await approvals.get_approval(approval_id, ui.state, ui.principal))
        if len({tuple(r.rules) for r in records}) > 1:
            problems.append("a batch holds approvals of the same rule only")
        risky = [r.approval_id for r in records if r.risk > _views.LOW_RISK]
        if risky:
            problems.append(
                f"a batch holds low-risk approvals only (risk at most {_views.LOW_RISK}); "
                f"decide {', '.join(risky)} one by one"
            )
    if problems:
        return ui.page("batch.html", 422, outcomes=[], problems=problems)
    outcomes: list[tuple[str, str]] = []
    body = ApprovalDecision(decision=choice, rationale=rationale)
    for record in records:
        try:
            decided = await approvals.decide(
                record.approval_id, body, ui.state, ui.principal, on_behalf_of_header=None
            )
            outcomes.append((record.approval_id, decided.state))
        except (ApiProblem, WardenError) as exc:
            outcomes.append((record.approval_id, "not decided: " + problem_of(exc)[2]))
    failed = any(state.startswith("not decided") for _, state in outcomes)
    return ui.page("batch.html", 409 if failed else 200, outcomes=outcomes, problems=[])


__all__ = ["router", "templates"]
