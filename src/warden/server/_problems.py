"""Errors as RFC 9457 problem details, with a stable machine-readable ``type``.

This module is the one place that maps exceptions to HTTP responses.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from warden.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    StoreError,
    UsageError,
    WardenError,
    first_line,
)

log = logging.getLogger("warden.server")

MEDIA = "application/problem+json"
PREFIX = "urn:warden:problem:"


class Problem(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


class ApiProblem(Exception):
    """Raised by routes: becomes a problem response."""

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extra = extra
        super().__init__(detail)


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def problem_response(status: int, slug: str, detail: str | None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PREFIX + slug,
        "title": _TITLES.get(status, "Error"),
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if k != "headers"})
    headers = extra.get("headers")
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the problem responses a route can give."""
    return {
        status: {
            "description": _TITLES.get(status, "Error"),
            "content": {MEDIA: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        out.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def _api_problem(exc: ApiProblem) -> JSONResponse:
    return problem_response(exc.status, exc.slug, exc.detail, **exc.extra)


def _validation(exc: RequestValidationError) -> JSONResponse:
    errors = _clean_errors(exc.errors())
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(
            400, "malformed-json", "the request body is not valid JSON", errors=errors
        )
    return problem_response(422, "validation", "the request does not match the schema", errors=errors)


def _http(exc: StarletteHTTPException) -> JSONResponse:
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http")
    return problem_response(exc.status_code, slug, str(exc.detail), headers=exc.headers)


def _unavailable(exc: Exception) -> JSONResponse:
    # The database refused or dropped the connection (restart, failover, outage). Work
    # already committed stays committed; buffered ledger events are kept and retried.
    log.warning("store unavailable: %s", exc)
    return problem_response(
        503, "store-unavailable", f"the store is unavailable, retry later: {first_line(exc)}"
    )


def _data(exc: DataError) -> JSONResponse:
    # A value the database cannot store (e.g. NUL inside a tool's free-text argument).
    return problem_response(422, "unstorable-value", f"a value cannot be stored: {exc.orig}")


def _unexpected(exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem_response(500, "internal", "an internal error occurred; it was logged")


# Exception class -> its answer; the most specific class in an exception's MRO wins, as in
# Starlette's own lookup.
_HANDLERS: dict[type[Exception], Callable[[Any], JSONResponse]] = {
    ApiProblem: _api_problem,
    RequestValidationError: _validation,
    StarletteHTTPException: _http,
    NotFoundError: lambda exc: problem_response(404, "not-found", str(exc)),
    ForbiddenError: lambda exc: problem_response(403, "forbidden", str(exc)),
    ConflictError: lambda exc: problem_response(409, "conflict", str(exc)),
    InvalidInputError: lambda exc: problem_response(400, "invalid-input", str(exc)),
    UsageError: lambda exc: problem_response(409, "conflict", str(exc)),
    StoreError: lambda exc: problem_response(503, "store-unavailable", str(exc)),
    DataError: _data,
    WardenError: lambda exc: problem_response(400, "bad-request", str(exc)),
    Exception: _unexpected,
}
# Through SQLAlchemy, and from the raw DB-API statements on the hot path (store._fast).
for _kind in (OperationalError, InterfaceError, sqlite3.OperationalError):
    _HANDLERS[_kind] = _unavailable
try:
    import psycopg
except ImportError:  # pragma: no cover - the PostgreSQL driver is an optional extra
    pass
else:
    _HANDLERS[psycopg.OperationalError] = _HANDLERS[psycopg.InterfaceError] = _unavailable


def response_for(exc: Exception) -> JSONResponse:
    """The problem response for ``exc``, for the exception handlers and for code that runs
    outside FastAPI's routing (``server._fastpath``)."""
    for kind in type(exc).__mro__:
        handler = _HANDLERS.get(kind)
        if handler is not None:
            return handler(exc)
    return _unexpected(exc)  # pragma: no cover - Exception is always in the MRO


def install(app: FastAPI) -> None:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return response_for(exc)

    for kind in _HANDLERS:
        app.add_exception_handler(kind, handle)
