"""The governed call, ``POST /v1/runs/{run_id}/actions``, served without FastAPI's routing.

Measured with ``benchmarks/load/run`` (PostgreSQL, ``--workers 2``, 16 connections, the
same machine, runs alternated): FastAPI's routing, dependency solving, body handling and
response validation took about a quarter of each call's CPU, and skipping them raised
the governed call from 1,088-1,285/s to 1,631-1,791/s. This middleware handles only a
well-formed request: the path's run id matches the route's pattern, the body is a JSON
object that validates as ``ActionCreate``. Anything else goes to the FastAPI route
untouched (body included), so its errors stay exactly what the OpenAPI document says;
a body that ``server._bodies`` refuses (a lone surrogate, nesting too deep) is answered
here with the same 400 the routes give.
The work itself is shared: the same ``caller_for`` as the auth dependency, the same
``govern`` as the route, and the same ``response_for`` as the exception handlers, so a
test can compare both paths answer for answer (``tests/test_server_api.py``).
"""

from __future__ import annotations

import re

from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warden.errors import InvalidInputError
from warden.server._bodies import parse_json_body, read_body
from warden.server._deps import Refused, caller_for
from warden.server._problems import response_for
from warden.server._schemas import ID_PATTERN, ActionCreate
from warden.server.api.runs import govern

_PATH = re.compile(r"^/v1/runs/([^/]+)/actions$")
_RUN_ID = re.compile(ID_PATTERN)


class GovernedCallFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = (
            _PATH.match(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        run_id = matched.group(1) if matched else ""
        # A query string (the route declares none) goes to the route, which refuses it.
        if scope.get("query_string") or not (0 < len(run_id) <= 40 and _RUN_ID.fullmatch(run_id)):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(reversed(scope["headers"]))  # the first one wins
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        body = await read_body(receive)
        if body is None:  # the client went away mid-body: nothing to govern, no one to answer
            return
        body_sent = False

        async def replay() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            action = _action(body) if content_type == b"application/json" else None
        except InvalidInputError as exc:
            await response_for(exc)(scope, replay, send)
            return
        if action is None:  # the route says what is wrong with it
            await self.app(scope, replay, send)
            return
        state = scope["app"].state.warden
        try:
            caller = await caller_for(
                state,
                headers.get(b"authorization", b"").decode("latin-1"),
                headers.get(b"x-api-key", b"").decode("latin-1"),
            )
            answer = await govern(state, caller, run_id, action)
        except Exception as exc:
            if isinstance(exc, Refused):  # counted as the route's handler counts it
                state.refused(exc.principal, exc.detail)
            response = response_for(exc)
        else:
            response = JSONResponse(answer.model_dump(mode="json"))
        await response(scope, replay, send)


def _action(body: bytes) -> ActionCreate | None:
    """The body as the route would validate it (``json.loads``, then the model); None if
    the route would refuse it; ``InvalidInputError`` if every route refuses it."""
    try:
        data = parse_json_body(body)
        return ActionCreate.model_validate(data) if isinstance(data, dict) else None
    except (ValueError, ValidationError):  # json.JSONDecodeError is a ValueError
        return None
