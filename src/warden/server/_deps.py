"""Request dependencies: the server state, the authenticated principal, role checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from warden.auth import ALL_TENANTS, BIND_HINT, Principal, Role
from warden.server._problems import ApiProblem
from warden.server._state import ServerState


# Both dependencies are ``async``: FastAPI runs a plain ``def`` dependency in its thread
# pool, and that hand-off cost ~130 µs of CPU per request (profile of the load benchmark),
# more than the key check itself (cached; a miss or a rate-limit hit is one short query,
# which blocks the loop as briefly as the handlers' own statements do).
async def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.warden
    return state


State = Annotated[ServerState, Depends(get_state)]


async def authenticate(request: Request, state: State) -> Principal:
    headers = request.headers
    return await caller_for(state, headers.get("authorization", ""), headers.get("x-api-key", ""))


async def caller_for(state: ServerState, authorization: str, api_key: str) -> Principal:
    """``principal_for`` on the event loop when it needs no store (a cached key, no rate
    limit: the common case, ~2 µs), else in the store threads (a key lookup or the rate
    limiter's write could wait for a lock)."""
    token = authorization[7:] if authorization.lower().startswith("bearer ") else api_key
    if state.limiter.per_second <= 0 and state.keys.answers_from_cache(token):
        return principal_for(state, authorization, api_key)
    return await state.run_sync(principal_for, state, authorization, api_key)


def principal_for(state: ServerState, authorization: str, api_key: str) -> Principal:
    """The key's principal, after its rate limit; ``ApiProblem`` 401 or 429 otherwise."""
    token = authorization[7:] if authorization.lower().startswith("bearer ") else api_key
    if not token:
        raise ApiProblem(
            401,
            "unauthorized",
            "send an API key: Authorization: Bearer wdn_...",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = state.keys.verify(token)
    if principal is None:
        raise ApiProblem(
            401,
            "unauthorized",
            "the API key is unknown, revoked or expired",
            headers={"WWW-Authenticate": "Bearer"},
        )
    allowed, retry_after = state.limiter.hit(principal.key_id)
    if not allowed:
        raise ApiProblem(
            429,
            "rate-limited",
            f"more than {state.limiter.per_second} requests per second for this key",
            headers={"Retry-After": str(max(1, round(retry_after)))},
        )
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


class Refused(ApiProblem):
    """A key reaching for another tenant's or another agent's objects: answered like any
    problem, and counted by the ``unauthorized_attempt`` alerts (``ServerState.refused``)."""

    def __init__(self, principal: Principal, status: int, slug: str, detail: str) -> None:
        super().__init__(status, slug, detail)
        self.principal = principal


def require(principal: Principal, *roles: Role) -> None:
    if principal.role is Role.ADMIN or principal.role in roles:
        return
    raise ApiProblem(
        403,
        "forbidden",
        f"a {principal.role.value} key cannot do this; needs {', '.join(r.value for r in roles) or 'admin'}",
    )


def tenant_for(principal: Principal, requested: str | None) -> str:
    """The tenant a request acts on: the key's own, or the one an all-tenant admin names."""
    if principal.tenant == ALL_TENANTS:
        if not requested:
            raise ApiProblem(422, "tenant-required", "an all-tenant key must name the tenant")
        return requested
    if requested is not None and requested != principal.tenant:
        # Do not reveal whether the other tenant exists.
        raise Refused(principal, 403, "forbidden", "this key is scoped to another tenant")
    return principal.tenant


def visible(
    principal: Principal,
    tenant: str,
    what: str,
    *,
    agent: str | None = None,
    workflow: str | None = None,
) -> None:
    """Objects of another tenant are reported as absent, never as forbidden; so are runs
    (and their approvals and events) of another agent, for an agent key: a key learns
    nothing about runs it may not act on. Pass the run's ``agent`` and ``workflow``."""
    if not principal.can_see(tenant):
        raise Refused(principal, 404, "not-found", f"no {what}")
    if agent is not None and workflow is not None and not principal.owns(agent, workflow):
        raise Refused(principal, 404, "not-found", f"no {what}")


def bound_agent(principal: Principal) -> str | None:
    """The agent an agent key acts as (None for other keys); 403 for an agent key made
    before keys were bound (fail closed: it acts on no run until bound)."""
    if principal.role is not Role.AGENT:
        return None
    if principal.agent is None:
        raise ApiProblem(
            403,
            "forbidden",
            f"agent key {principal.key_id} is not bound to an agent, so it acts on no run; "
            + BIND_HINT,
        )
    return principal.agent
