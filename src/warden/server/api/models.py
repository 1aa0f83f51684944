"""The model proxy: OpenAI's ``POST /v1/chat/completions`` and Anthropic's
``POST /v1/messages``, each a governed model call.

An existing agent changes only its base URL and key: the ``model`` it names is a model
declared in a workflow spec (``models:``), the key is a Warden API key (``Authorization:
Bearer`` or ``x-api-key``), and the upstream's key never reaches it. The call is a step of
a run: the run named by ``X-Warden-Run``, else the run Warden keeps for the key and the
conversation (``X-Warden-Conversation``, or a hash of the conversation's first messages),
opened on first use. The reply is the upstream's body (converted when the upstream speaks
the other API), streamed event by event when asked; Warden's own facts come as headers
(``X-Warden-Run``, ``X-Warden-Action``, ``X-Warden-Cost-USD``, ``X-Warden-Max-Tokens``
when a budget capped the request). ``X-Warden-Hints`` (a JSON object) is what the agent
says for routes (``{"confidence": 0.4}``). A call Warden does not let through is an error in the
client's own shape (``{"error": {"type", "message", "code"}}``) and a problem document.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select

from warden.auth import ALL_TENANTS, Principal, Role
from warden.errors import InvalidInputError
from warden.gateway import Gateway, Run
from warden.pipeline._models import ChatResult, ChatStreamResult
from warden.results import Denied, Failed, FailureKind, Pending, Result
from warden.server._deps import Caller, State, bound_agent, require
from warden.server._paging import any_query
from warden.server._problems import MEDIA, PREFIX, ApiProblem, problem_responses
from warden.server._state import ServerState
from warden.store._tables import runs
from warden.telemetry._redact import stored_identity
from warden.upstream import Wire

router = APIRouter(tags=["model proxy"])
ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 429, 502, 503, 504)

_STATUS = {
    FailureKind.BUDGET_EXCEEDED: 429,
    FailureKind.KILLED: 503,
    FailureKind.SCHEMA_ERROR: 400,
    FailureKind.UNKNOWN_TOOL: 404,
    FailureKind.TIMEOUT: 504,
    FailureKind.UPSTREAM_ERROR: 502,
    FailureKind.CIRCUIT_OPEN: 503,
    FailureKind.MAX_STEPS: 409,
    FailureKind.RUNAWAY: 409,
}


@router.post(
    "/v1/chat/completions",
    responses=ERRORS,
    summary="OpenAI-compatible chat completions, governed",
    description="The OpenAI chat completions API (JSON or `stream: true` server-sent "
    "events). `model` names a model declared in a workflow spec.",
)
@any_query
async def chat_completions(request: Request, state: State, caller: Caller) -> Any:
    return await proxy(state, caller, request, "openai")


@router.post(
    "/v1/messages",
    responses=ERRORS,
    summary="Anthropic-compatible messages, governed",
    description="Anthropic's messages API (JSON or `stream: true` server-sent events). "
    "`model` names a model declared in a workflow spec.",
)
@any_query
async def messages(request: Request, state: State, caller: Caller) -> Any:
    return await proxy(state, caller, request, "anthropic")


async def proxy(state: ServerState, caller: Principal, request: Request, wire: Wire) -> Any:
    require(caller, Role.AGENT)
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise ApiProblem(400, "malformed-json", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiProblem(400, "invalid-input", "the request body must be a JSON object")
    model = body.pop("model", None)
    if not isinstance(model, str) or not model:
        raise ApiProblem(400, "invalid-input", "'model' is required: a model declared in a spec")
    messages = body.pop("messages", None)
    if not isinstance(messages, list):
        raise ApiProblem(400, "invalid-input", "'messages' must be a list of messages")
    stream = body.pop("stream", False) is True
    hints: Any = {}
    if (raw_hints := request.headers.get("x-warden-hints")) is not None:
        try:
            hints = json.loads(raw_hints)
        except ValueError:
            hints = None
        if not isinstance(hints, dict):
            raise ApiProblem(400, "invalid-input", "X-Warden-Hints must be a JSON object")
    gateway = _gateway_for(state, caller, model, request.headers.get("x-warden-workflow"))
    # the conversation's identity reads the messages: put them back for it
    run = await _run_for(state, caller, gateway, request, {**body, "messages": messages})
    try:
        result = await run.chat(
            model,
            messages,
            stream=stream,
            wire=wire,
            hints=hints,
            actor=caller.identity,
            api_key=caller.key_id,
            **body,
        )
    except BaseException:
        await state.save_run(run)
        raise
    headers = {"X-Warden-Run": run.run_id}
    if isinstance(result, ChatStreamResult):
        headers["X-Warden-Action"] = result.action_id
        if result.capped_max_tokens is not None:
            headers["X-Warden-Max-Tokens"] = str(result.capped_max_tokens)
        return StreamingResponse(
            _relay(state, run, result), media_type="text/event-stream", headers=headers
        )
    await state.save_run(run)
    if isinstance(result, ChatResult):
        headers["X-Warden-Action"] = result.action_id
        if result.cost_usd is not None:
            headers["X-Warden-Cost-USD"] = str(result.cost_usd)
        if result.capped_max_tokens is not None:
            headers["X-Warden-Max-Tokens"] = str(result.capped_max_tokens)
        return JSONResponse(result.body, headers=headers)
    return _refused(result, wire, headers)


async def _relay(state: ServerState, run: Run, stream: ChatStreamResult) -> AsyncIterator[bytes]:
    """The upstream's events as they come; the call is settled and the run saved at the
    end, also when the client goes away mid-stream."""
    try:
        async for event in stream:
            yield event.encode()
    finally:
        await stream.aclose()
        await state.save_run(run)


def _refused(result: Result, wire: Wire, headers: dict[str, str]) -> JSONResponse:
    """A call that did not run, in the client's error shape and as a problem document."""
    if isinstance(result, Denied):
        kind, detail, status = result.kind, "; ".join(result.reasons), 403
        extra: dict[str, Any] = {"rules": list(result.rules)}
    elif isinstance(result, Failed):
        kind, detail, status, extra = result.kind, result.detail, 502, {}
    elif isinstance(result, Pending):
        kind, status = None, 403
        detail = (
            f"the call waits for approval {result.approval_id}: retry after it is approved "
            "(GET /v1/approvals/{id})"
        )
        extra = {"approval_id": result.approval_id}
    else:  # pragma: no cover - every other result is handled above
        raise AssertionError(result)
    if kind is not None:
        status = _STATUS.get(kind, status)
        headers["X-Warden-Action"] = result.action_id
    code = kind.value if kind is not None else "approval_required"
    error_type = {
        "openai": "invalid_request_error" if status == 400 else "warden_" + code,
        "anthropic": "invalid_request_error" if status == 400 else "permission_error",
    }[wire]
    if status == 429 and wire == "anthropic":
        error_type = "rate_limit_error"
    body: dict[str, Any] = {
        "type": PREFIX + code.replace("_", "-"),
        "title": "The call was not let through",
        "status": status,
        "detail": detail,
        "kind": code,
        **extra,
        "error": {"type": error_type, "message": detail, "code": code},
    }
    if wire == "anthropic":
        body["error"].pop("code")
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA)


def _gateway_for(
    state: ServerState, caller: Principal, model: str, asked: str | None
) -> Gateway:
    """The workflow whose spec declares ``model`` (and that the key may use)."""
    allowed = [
        name
        for name in state.workflow_names
        if not caller.workflows or name in caller.workflows
    ]
    if asked is not None:
        if asked not in allowed:
            raise ApiProblem(404, "not-found", f"no workflow {asked!r} for this key")
        allowed = [asked]
    serving = [
        name
        for name in allowed
        if (models := state.gateway(name).svc.models) is not None
        and (model in models.declared or model in models.routes)
    ]
    if not serving:
        declared = sorted(
            {
                m
                for name in allowed
                if (ms := state.gateway(name).svc.models) is not None
                for m in [*ms.declared, *ms.routes]
            }
        )
        raise ApiProblem(
            404,
            "not-found",
            f"no model {model!r} (declared: {', '.join(declared) or 'none'})",
        )
    if len(serving) > 1:
        raise ApiProblem(
            400,
            "invalid-input",
            f"model {model!r} is declared by workflows {', '.join(serving)}: "
            "name one with the X-Warden-Workflow header",
        )
    return state.gateway(serving[0])


async def _run_for(
    state: ServerState,
    caller: Principal,
    gateway: Gateway,
    request: Request,
    body: dict[str, Any],
) -> Run:
    """The run this call is a step of: ``X-Warden-Run``, else the key's run for this
    conversation (opened on first use)."""
    workflow = gateway.spec.spec.name
    agent = bound_agent(caller) or request.headers.get("x-warden-agent")
    tenant = caller.tenant
    if tenant == ALL_TENANTS:
        tenant = request.headers.get("x-warden-tenant") or ""
        if not tenant:
            raise ApiProblem(400, "invalid-input", "an all-tenant key names the tenant: X-Warden-Tenant")
    run_id = request.headers.get("x-warden-run")
    if run_id is None:
        if agent is None:
            raise ApiProblem(
                400,
                "invalid-input",
                "a key not bound to an agent names the agent (X-Warden-Agent) or the run "
                "(X-Warden-Run)",
            )
        conversation = request.headers.get("x-warden-conversation") or _conversation(body)
        task = f"chat {conversation}"
        # The conversation's run as this process last found it: taking its step checks
        # it is still running (else it is looked up, or opened, again).
        known = (caller.key_id, workflow, tenant, agent, task)
        run_id = _CONVERSATIONS.get(known)
        row = None if run_id is None else await _claim(state, caller, workflow, run_id)
        if row is None:
            run_id = await state.run_sync(
                _open_run_of, state, caller, gateway, tenant, agent, task
            )
            _remember(known, run_id)
        else:
            assert run_id is not None
            return gateway.resume_run(run_id, row=row, claimed=True)
    row = await _claim(state, caller, workflow, run_id)
    if row is None:
        raise ApiProblem(
            409, "run-finished", f"no running run {run_id!r} of workflow {workflow!r} for this key"
        )
    return gateway.resume_run(run_id, row=row, claimed=True)


async def _claim(
    state: ServerState, caller: Principal, workflow: str, run_id: str
) -> dict[str, Any] | None:
    return await state.claim_step(
        run_id,
        workflows=(workflow,),
        tenant=None if caller.tenant == ALL_TENANTS else caller.tenant,
        agent=bound_agent(caller),
    )


#: (key, workflow, tenant, agent, conversation) -> its run, as this process last found it
#: (profiled: the lookup cost ~3.8 ms a call in a store thread); bounded, oldest dropped
_CONVERSATIONS: OrderedDict[tuple[str, str, str, str, str], str] = OrderedDict()
_CONVERSATIONS_KEPT = 10_000


def _remember(known: tuple[str, str, str, str, str], run_id: str) -> None:
    _CONVERSATIONS[known] = run_id
    _CONVERSATIONS.move_to_end(known)
    while len(_CONVERSATIONS) > _CONVERSATIONS_KEPT:
        _CONVERSATIONS.popitem(last=False)


def _conversation(body: dict[str, Any]) -> str:
    """A conversation's identity: the hash of its messages up to the first user message,
    and of Anthropic's ``system`` (every request of a conversation repeats them)."""
    messages = body.get("messages")
    first: list[Any] = []
    for message in messages if isinstance(messages, list) else []:
        first.append(message)
        if isinstance(message, dict) and message.get("role") == "user":
            break
    seed = json.dumps([body.get("system"), first], sort_keys=True, default=str)
    return hashlib.sha256(seed.encode()).hexdigest()[:24]


def _open_run_of(
    state: ServerState, caller: Principal, gateway: Gateway, tenant: str, agent: str, task: str
) -> str:
    """The running run of this key, agent and task, or a new one."""
    workflow = gateway.spec.spec.name
    caller.check_open(agent, workflow)
    with state.store.read() as conn:
        found = conn.execute(
            select(runs.c.run_id)
            .where(
                runs.c.workflow == workflow,
                runs.c.tenant == tenant,
                runs.c.agent == agent,
                # stored tokenized where they hold PII (docs/pii.md)
                runs.c.task == stored_identity(gateway.svc.pii, tenant, task),
                runs.c.opened_by == stored_identity(gateway.svc.pii, tenant, caller.identity),
                runs.c.status == "running",
            )
            .order_by(runs.c.started_at.desc())
            .limit(1)
        ).first()
    if found is not None:
        return str(found[0])
    try:
        run = gateway.open_run(tenant=tenant, agent=agent, task=task, opened_by=caller.identity)
    except InvalidInputError as exc:
        raise ApiProblem(400, "invalid-input", str(exc)) from exc
    return run.run_id
