"""What a JSON request body may hold, checked in one place for the fast path and every route.

Two kinds of well-formed JSON are refused with 400 ``invalid-input`` before anything reads
them: a lone surrogate (``"\\ud800"``) anywhere in a string or a key, because it cannot be
encoded as UTF-8 and so cannot be canonicalised, hashed or stored; and nesting deeper than
``MAX_DEPTH``, because every later step (validation, canonical JSON, CEL) recurses and
would fail with ``RecursionError`` far from the request that caused it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warden.errors import InvalidInputError
from warden.server._problems import response_for

#: Deepest nesting of objects and arrays accepted in a body (the body itself is level 1).
MAX_DEPTH = 64

# A lone surrogate can only come from a ``\uD800``-``\uDFFF`` escape: raw UTF-8 cannot
# encode one, and json.loads refuses bytes that try. Bodies without such an escape (almost
# all) skip the walk over their strings.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json_body(body: bytes) -> Any:
    """The body as ``json.loads`` reads it, checked.

    Raises ``ValueError`` for malformed JSON (the route says how, in its own words) and
    ``InvalidInputError`` for JSON that is well formed but refused (see the module doc).
    """
    try:
        data = json.loads(body)
    except RecursionError:
        raise InvalidInputError(
            f"the JSON body is nested deeper than {MAX_DEPTH} levels"
        ) from None
    surrogates = _SURROGATE_ESCAPE.search(body) is not None
    # n objects and arrays nest at most n deep: most bodies need no walk at all.
    if surrogates or body.count(b"{") + body.count(b"[") > MAX_DEPTH:
        check_json(data, surrogates=surrogates)
    return data


def check_json(value: Any, *, surrogates: bool = True) -> None:
    """Raise ``InvalidInputError`` if ``value`` nests deeper than ``MAX_DEPTH`` or (when
    ``surrogates``) holds a string or key with a lone surrogate."""
    # Iterative: the point is not to recurse on input built to be deep.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if surrogates:
                _check_text(item)
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidInputError(
                    f"the JSON body is nested deeper than {MAX_DEPTH} levels"
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    if surrogates:
                        _check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            "a string in the JSON body holds a lone surrogate (e.g. \\ud800), which is not "
            "valid Unicode text; send the character's full surrogate pair or escape it"
        ) from None


def is_json(content_type: bytes | None) -> bool:
    """Whether FastAPI parses a body with this content type as JSON (it does with none,
    with ``application/json`` and with ``application/*+json``)."""
    if not content_type:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    main, _, sub = media.partition(b"/")
    return main == b"application" and (sub == b"json" or sub.endswith(b"+json"))


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body; None if the client went away before sending it all."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class JsonBodyCheck:
    """Refuse, for every route, a JSON body that ``parse_json_body`` refuses.

    The body is read, checked and handed on unchanged; malformed JSON is left to the
    route, so its answer (400 ``malformed-json`` with the parser's errors) stays its own.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH", "DELETE"}:
            await self.app(scope, receive, send)
            return
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
                break
        if not is_json(content_type):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:  # nobody is left to answer
            return
        if body:
            try:
                parse_json_body(body)
            except InvalidInputError as exc:
                await response_for(exc)(scope, receive, send)
                return
            except ValueError:
                pass
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
