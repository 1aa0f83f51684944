"""What every console page shares: the signed-in key, forms and CSRF, templates, errors.

Pages call the /v1 route functions themselves (``warden.server.api``) with the signed-in
key's ``Principal``: the same role checks, tenant scoping and agent binding apply, and an
``ApiProblem`` or ``WardenError`` they raise becomes an HTML page with the same status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from warden.auth import ALL_TENANTS, Principal
from warden.errors import NotFoundError
from warden.server._deps import State
from warden.server._problems import ApiProblem, response_for
from warden.server._state import ServerState
from warden.server.ui import _views
from warden.server.ui._session import PRESESSION_COOKIE, SESSION_COOKIE, Session, Sessions

log = logging.getLogger("warden.server.ui")

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals.update(
    countdown=_views.countdown,
    pretty=_views.pretty,
    compact=_views.compact,
    LOW_RISK=_views.LOW_RISK,
    ALL_TENANTS=ALL_TENANTS,
)

#: the console's pages load scripts and styles from /ui/static only
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: a form body larger than this is refused (the console's forms are small)
MAX_FORM_BYTES = 256 * 1024


class SignInNeeded(Exception):
    """No valid session: the page answers with a redirect to the sign-in form."""


class FormRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(detail)


def sessions(request: Request) -> Sessions:
    """This app's session signer (made on first use, with the configured secret)."""
    found: Sessions | None = getattr(request.app.state, "warden_ui_sessions", None)
    if found is None:
        state: ServerState = request.app.state.warden
        found = request.app.state.warden_ui_sessions = Sessions(state.settings.ui_secret)
    return found


@dataclass(frozen=True)
class Console:
    """A signed-in request: who, and the token its forms carry."""

    request: Request
    state: ServerState
    principal: Principal
    session: Session
    csrf: str

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            self.request,
            name,
            {"me": self.principal, "csrf": self.csrf, "now": datetime.now(UTC), **context},
            status_code=status,
        )


async def signed_in(request: Request, state: State) -> Console:
    session = sessions(request).read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInNeeded

    def lookup() -> Principal | None:
        try:
            info = state.keys.get(session.key_id)
        except NotFoundError:
            return None
        return info.principal() if info.active else None

    principal = await state.run_sync(lookup)
    if principal is None:  # revoked or expired since sign-in: the session ends with the key
        raise SignInNeeded
    allowed, retry_after = await state.run_sync(state.limiter.hit, principal.key_id)
    if not allowed:
        raise ApiProblem(
            429,
            "rate-limited",
            f"more than {state.limiter.per_second} requests per second for this key",
            headers={"Retry-After": str(max(1, round(retry_after)))},
        )
    return Console(request, state, principal, session, sessions(request).csrf_for(session.session_id))


ConsoleDep = Annotated[Console, Depends(signed_in)]


def form_of(request: Request) -> dict[str, list[str]]:
    """The POST's form fields, parsed (and CSRF-checked) by ``ConsoleRoute``."""
    form: dict[str, list[str]] = request.state.form
    return form


def field(form: dict[str, list[str]], name: str, default: str = "") -> str:
    values = form.get(name)
    return values[-1] if values else default


def problem_of(exc: Exception) -> tuple[int, str, str]:
    if isinstance(exc, FormRefused):
        return exc.status, "Refused", exc.detail
    answer = response_for(exc)
    body = json.loads(bytes(answer.body))
    detail = body.get("detail") or body.get("title", "")
    if body.get("errors"):
        detail += ": " + "; ".join(
            f"{'.'.join(e.get('loc', []))}: {e.get('msg', '')}" for e in body["errors"]
        )
    return answer.status_code, str(body.get("title", "Error")), str(detail)


def error_page(request: Request, exc: Exception) -> HTMLResponse:
    status, title, detail = problem_of(exc)
    response = templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "title": title, "detail": detail, "me": None, "csrf": ""},
        status_code=status,
    )
    if status == 429 and isinstance(exc, ApiProblem) and "headers" in exc.extra:
        response.headers.update(exc.extra["headers"])
    return response


def _harden(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _parse_form(request: Request) -> dict[str, list[str]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise FormRefused(415, "console forms are sent as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise FormRefused(413, f"form bodies are limited to {MAX_FORM_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FormRefused(400, "the form is not UTF-8") from None
    if "\x00" in text or "%00" in text:
        raise FormRefused(400, "form fields must not contain NUL characters")
    return parse_qs(text, keep_blank_values=True, max_num_fields=1000)


def _check_csrf(request: Request, form: dict[str, list[str]]) -> None:
    """Every POST carries the token of the session it was served to; the sign-in form
    that of the pre-session cookie."""
    signer = sessions(request)
    token = field(form, "csrf")
    session = signer.read(request.cookies.get(SESSION_COOKIE))
    if session is not None and signer.csrf_ok(session.session_id, token):
        return
    pre = request.cookies.get(PRESESSION_COOKIE)
    if request.url.path == "/ui/signin" and pre and signer.csrf_ok("pre:" + pre, token):
        return
    raise FormRefused(403, "the form's CSRF token is missing or does not match this session")


class ConsoleRoute(APIRoute):
    """Console routes answer HTML: errors become pages, a missing session a redirect to
    sign-in, and every POST is refused unless its CSRF token matches."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                if request.method == "POST":
                    form = await _parse_form(request)
                    _check_csrf(request, form)
                    request.state.form = form
                response = await original(request)
            except SignInNeeded:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                location = "/ui/signin?next=" + quote(target, safe="")
                if request.headers.get("hx-request"):
                    response = Response(status_code=204, headers={"HX-Redirect": location})
                elif request.method == "GET" and request.url.path != "/ui/approvals/events":
                    response = RedirectResponse(location, status_code=303)
                else:
                    response = error_page(
                        request, ApiProblem(401, "unauthorized", "sign in again: the session ended")
                    )
            except Exception as exc:
                response = error_page(request, exc)
            return _harden(response)

        return handler


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path only, never another site."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/approvals"


__all__ = [
    "Console",
    "ConsoleDep",
    "ConsoleRoute",
    "FormRefused",
    "error_page",
    "field",
    "form_of",
    "problem_of",
    "safe_next",
    "sessions",
    "templates",
]
