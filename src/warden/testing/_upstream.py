"""A fake model upstream on loopback: OpenAI's chat completions and Anthropic's messages,
served over real HTTP, with scripted replies.

``FakeUpstream`` runs uvicorn in a background thread on ``127.0.0.1`` (a port the OS picks)
and answers ``POST /v1/chat/completions`` and ``POST /v1/messages`` as the real APIs do —
JSON or server-sent events with their real chunk and event shapes — from a queue of
``FakeReply`` or a function of the request. A reply can carry text, tool calls and usage
(given, or about one token per four characters), wait before its first byte or between
events, fail with a status, a body and ``Retry-After``, send an error event, or drop the
connection halfway through a stream. Every request it receives is recorded, headers
included, so a test can check which credential reached the upstream.

The bodies are written here from the APIs' documentation, not with Warden's own builders,
so a test against the fake checks Warden's reading of the real shapes rather than its
agreement with itself. Nothing sleeps unless a reply says so: the fake also serves as the
upstream of the proxy benchmarks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn

from warden.errors import UsageError
from warden.upstream import ToolCall, Usage, Wire

Script = Callable[["FakeRequest"], "FakeReply | str"]

_OPENAI_PATH = "/v1/chat/completions"
_ANTHROPIC_PATH = "/v1/messages"

# status -> (OpenAI message, type, code); Anthropic error type
_OPENAI_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", None),
    404: ("The model does not exist.", "invalid_request_error", "model_not_found"),
    408: ("Request timed out.", "server_error", None),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}
_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


@dataclass(frozen=True)
class FakeReply:
    """What the fake answers to one request.

    - ``text``, ``tool_calls``, ``finish_reason`` (OpenAI's words; by default ``stop``, or
      ``tool_calls`` when there are some), ``model`` (by default the request's).
    - ``usage``: given; ``"auto"`` (about one token per four characters of the request's
      messages and of the reply); or ``None`` for a server that reports none.
    - ``status`` other than 200 answers an error: ``error`` is its body (a dict as JSON,
      a string as text; by default the kind's own error shape), with ``headers`` such as
      ``Retry-After``.
    - ``delay`` seconds before the answer starts; ``chunk_delay`` between stream events;
      ``chunk_chars`` characters of text (or tool arguments) per stream delta.
    - ``cut_after``: in a stream, drop the connection after that many events.
    - ``error_event_after``: in a stream, send an error event (``error_type``, by default
      an overload) after that many events and end the stream.
    - ``omit_usage``: in a stream, report no usage even when asked.
    """

    text: str = "ok"
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: str | None = None
    model: str | None = None
    usage: Usage | Literal["auto"] | None = "auto"
    status: int = 200
    error: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_chars: int = 8
    cut_after: int | None = None
    error_event_after: int | None = None
    error_type: str = "overloaded_error"
    omit_usage: bool = False

    @classmethod
    def failure(
        cls, status: int, *, retry_after: float | None = None, error: Any = None
    ) -> FakeReply:
        """An error answer, e.g. ``FakeReply.failure(429, retry_after=1)``."""
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        return cls(status=status, error=error, headers=headers)


@dataclass(frozen=True)
class FakeRequest:
    """A request the fake received: which API, the headers (lower-case names) and body."""

    wire: Wire
    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def model(self) -> str | None:
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    @property
    def credential(self) -> str | None:
        """The credential the request carried: ``Authorization: Bearer`` or the kind's own
        header (``api-key`` for Azure OpenAI, ``x-api-key`` for Anthropic; recent
        Anthropic clients send a bearer token too)."""
        auth = self.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return auth.removeprefix("Bearer ")
        return self.headers.get("x-api-key" if self.wire == "anthropic" else "api-key")


class _Cut(Exception):
    """Raised inside the app to drop a stream's connection halfway (uvicorn closes it)."""


class _QuietCut(logging.Filter):
    """uvicorn logs an app's exception with its traceback; a deliberate cut is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Cut))


_QUIET = _QuietCut()


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def _tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), max(1, size))]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class FakeUpstream:
    """A fake OpenAI-compatible and Anthropic-compatible upstream on loopback.

    ``replies`` is a queue of scripted answers (a string is a text reply), or a function of
    the ``FakeRequest`` that returns one; when the queue is empty, ``default`` answers.
    ``api_key``, if set, is the only credential accepted (others get the kind's 401).

    Use it as a context manager (``with FakeUpstream() as fake:``, or ``async with``) or
    call ``start``/``stop``. Point an OpenAI client at ``openai_url`` and an Anthropic
    client at ``anthropic_url``.
    """

    def __init__(
        self,
        replies: Iterable[FakeReply | str] | Script | None = None,
        *,
        default: FakeReply | str = "ok",
        api_key: str | None = None,
    ) -> None:
        self._script: Script | None = None
        self._queue: deque[FakeReply | str] = deque()
        if callable(replies):
            self._script = replies
        elif replies is not None:
            self._queue.extend(replies)
        self.default = default
        self.api_key = api_key
        self.requests: list[FakeRequest] = []
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None
        self.port = 0

    # ------------------------------------------------------------ script and record

    def push(self, *replies: FakeReply | str) -> None:
        """Queue more answers, in order."""
        self._queue.extend(replies)

    def reset(self) -> None:
        """Forget queued answers and recorded requests (between tests sharing a fake)."""
        self._queue.clear()
        self.requests.clear()

    def _next(self, request: FakeRequest) -> FakeReply:
        try:
            chosen: FakeReply | str = self._queue.popleft()
        except IndexError:
            chosen = self._script(request) if self._script is not None else self.default
        return FakeReply(text=chosen) if isinstance(chosen, str) else chosen

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if not self.port:
            raise UsageError("the fake upstream is not running: use it as a context manager")
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """The base URL for an OpenAI client (it ends with ``/v1``)."""
        return self.url + "/v1"

    @property
    def anthropic_url(self) -> str:
        """The base URL for an Anthropic client (the client adds ``/v1/messages``)."""
        return self.url

    def start(self) -> FakeUpstream:
        if self._server is not None:
            raise UsageError("the fake upstream is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,
            timeout_graceful_shutdown=1,
        )
        logging.getLogger("uvicorn.error").addFilter(_QUIET)
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-upstream", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        if self._loop is not None and self._closing is not None:
            # wake replies that are sleeping out a scripted delay
            self._loop.call_soon_threadsafe(self._closing.set)
        server.should_exit = True
        thread.join(15)
        self._server = self._thread = None
        self._loop = self._closing = None
        self.port = 0

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeUpstream:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # ------------------------------------------------------------ HTTP

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        assert self._closing is not None
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            pass

    async def _app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self._closing is None:
            self._loop = asyncio.get_running_loop()
            self._closing = asyncio.Event()
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        path = scope["path"]
        wire: Wire
        if scope["method"] == "POST" and path == _OPENAI_PATH:
            wire = "openai"
        elif scope["method"] == "POST" and path == _ANTHROPIC_PATH:
            wire = "anthropic"
        else:
            await _respond(send, 404, _dumps({"error": {"message": f"no route {path}"}}))
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = json.loads(b"".join(chunks) or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            await self._error(send, wire, 400, "the body must be a JSON object")
            return
        request = FakeRequest(wire, path, headers, body)
        self.requests.append(request)
        problem = self._check(request)
        if problem is not None:
            await self._error(send, wire, *problem)
            return
        try:
            reply = self._next(request)
        except Exception as exc:  # a broken script: say so in the answer
            await _respond(
                send, 500, f"fake upstream script failed: {exc!r}".encode(), "text/plain"
            )
            return
        await self._pause(reply.delay)
        if reply.status != 200:
            await self._error(send, wire, reply.status, None, reply)
            return
        model = reply.model or request.model or "fake-model"
        usage = self._usage(request, reply)
        if request.stream:
            await self._stream(send, request, reply, model, usage)
        elif wire == "openai":
            await _respond(send, 200, _dumps(self._openai_body(reply, model, usage)))
        else:
            await _respond(send, 200, _dumps(self._anthropic_body(reply, model, usage)))

    def _check(self, request: FakeRequest) -> tuple[int, str] | None:
        """What the real API would refuse before answering (a subset: auth and shape)."""
        if self.api_key is not None and request.credential != self.api_key:
            return 401, "invalid credential"
        body = request.body
        if request.wire == "anthropic" and "anthropic-version" not in request.headers:
            return 400, "anthropic-version: header is required"
        if not isinstance(body.get("model"), str):
            return 400, "model: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, "messages: at least one message is required"
        if request.wire == "anthropic":
            if not isinstance(body.get("max_tokens"), int):
                return 400, "max_tokens: Field required"
            for i, message in enumerate(messages):
                if not isinstance(message, dict) or message.get("role") not in (
                    "user",
                    "assistant",
                ):
                    return 400, f"messages.{i}.role: Input should be 'user' or 'assistant'"
        elif "stream_options" in body and body.get("stream") is not True:
            return 400, "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        return None

    def _usage(self, request: FakeRequest, reply: FakeReply) -> Usage | None:
        if reply.usage != "auto":
            return reply.usage
        asked = sum(len(t) for t in _texts(request.body.get("messages")))
        asked += sum(len(t) for t in _texts(request.body.get("system")))
        said = len(reply.text) + sum(len(c.name) + len(c.arguments) for c in reply.tool_calls)
        return Usage(_tokens(asked), _tokens(said))

    async def _error(
        self,
        send: Send,
        wire: Wire,
        status: int,
        message: str | None,
        reply: FakeReply | None = None,
    ) -> None:
        headers = dict(reply.headers) if reply else {}
        if reply is not None and reply.error is not None:
            if isinstance(reply.error, str):
                await _respond(send, status, reply.error.encode(), "text/plain", headers)
            else:
                await _respond(send, status, _dumps(reply.error), headers=headers)
            return
        if wire == "openai":
            said, kind, code = _OPENAI_ERRORS.get(status, ("Error.", "server_error", None))
            body: dict[str, Any] = {
                "error": {"message": message or said, "type": kind, "param": None, "code": code}
            }
        else:
            kind = _ANTHROPIC_ERRORS.get(
                status, "api_error" if status >= 500 else "invalid_request_error"
            )
            body = {
                "type": "error",
                "error": {"type": kind, "message": message or kind.replace("_", " ")},
                "request_id": f"req_fake{next(self._ids)}",
            }
        await _respond(send, status, _dumps(body), headers=headers)

    # ------------------------------------------------------------ bodies

    @staticmethod
    def _finish(reply: FakeReply) -> str:
        return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")

    @staticmethod
    def _openai_usage(usage: Usage) -> dict[str, Any]:
        return {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _anthropic_usage(usage: Usage) -> dict[str, Any]:
        return {
            "input_tokens": usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "output_tokens": usage.output_tokens,
        }

    def _openai_body(self, reply: FakeReply, model: str, usage: Usage | None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text if reply.text or not reply.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in reply.tool_calls
            ]
        body: dict[str, Any] = {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish(reply),
                }
            ],
            "service_tier": "default",
            "system_fingerprint": None,
        }
        if usage is not None:
            body["usage"] = self._openai_usage(usage)
        return body

    def _anthropic_content(self, reply: FakeReply) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if reply.text or not reply.tool_calls:
            content.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            content.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.parsed()}
            )
        return content

    def _anthropic_body(self, reply: FakeReply, model: str, usage: Usage | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": f"msg_fake{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": self._anthropic_content(reply),
            "stop_reason": _ANTHROPIC_STOP.get(self._finish(reply), "end_turn"),
            "stop_sequence": None,
        }
        if usage is not None:
            body["usage"] = self._anthropic_usage(usage)
        return body

    # ------------------------------------------------------------ streams

    def _openai_events(
        self, request: FakeRequest, reply: FakeReply, model: str, usage: Usage | None
    ) -> list[bytes]:
        options = request.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        ident = f"chatcmpl-fake{next(self._ids)}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                body["usage"] = None
            return b"data: " + _dumps(body) + b"\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": p}) for p in _pieces(reply.text, reply.chunk_chars)]
        for index, call in enumerate(reply.tool_calls):
            start = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            events.append(chunk({"tool_calls": [start]}))
            for piece in _pieces(call.arguments, reply.chunk_chars):
                events.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        events.append(chunk({}, self._finish(reply)))
        if include_usage and usage is not None and not reply.omit_usage:
            final = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": None,
                "choices": [],
                "usage": self._openai_usage(usage),
            }
            events.append(b"data: " + _dumps(final) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events

    def _anthropic_events(self, reply: FakeReply, model: str, usage: Usage | None) -> list[bytes]:
        def event(kind: str, body: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: ".encode() + _dumps({"type": kind, **body}) + b"\n\n"

        reported = None if reply.omit_usage else usage
        start_usage = (
            {**self._anthropic_usage(reported), "output_tokens": 1}
            if reported is not None
            else None
        )
        message: dict[str, Any] = {
            "id": f"msg_fake{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if start_usage is not None:
            message["usage"] = start_usage
        events = [event("message_start", {"message": message})]
        index = 0
        if reply.text or not reply.tool_calls:
            events.append(
                event(
                    "content_block_start",
                    {"index": 0, "content_block": {"type": "text", "text": ""}},
                )
            )
            events.append(event("ping", {}))
            for piece in _pieces(reply.text, reply.chunk_chars):
                events.append(
                    event(
                        "content_block_delta",
                        {"index": 0, "delta": {"type": "text_delta", "text": piece}},
                    )
                )
            events.append(event("content_block_stop", {"index": 0}))
            index = 1
        for call in reply.tool_calls:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            events.append(event("content_block_start", {"index": index, "content_block": block}))
            for piece in _pieces(call.arguments, reply.chunk_chars):
                delta = {"type": "input_json_delta", "partial_json": piece}
                events.append(event("content_block_delta", {"index": index, "delta": delta}))
            events.append(event("content_block_stop", {"index": index}))
            index += 1
        stop = _ANTHROPIC_STOP.get(self._finish(reply), "end_turn")
        final: dict[str, Any] = {"delta": {"stop_reason": stop, "stop_sequence": None}}
        if reported is not None:
            final["usage"] = {"output_tokens": reported.output_tokens}
        events.append(event("message_delta", final))
        events.append(event("message_stop", {}))
        return events

    def _error_event(self, wire: Wire, reply: FakeReply) -> bytes:
        if wire == "anthropic":
            body = {"type": "error", "error": {"type": reply.error_type, "message": "Overloaded"}}
            return b"event: error\ndata: " + _dumps(body) + b"\n\n"
        said = {"message": "The server is overloaded.", "type": reply.error_type, "code": None}
        return b"data: " + _dumps({"error": said}) + b"\n\n"

    async def _stream(
        self, send: Send, request: FakeRequest, reply: FakeReply, model: str, usage: Usage | None
    ) -> None:
        if request.wire == "openai":
            events = self._openai_events(request, reply, model, usage)
        else:
            events = self._anthropic_events(reply, model, usage)
        if reply.error_event_after is not None:
            events = [*events[: reply.error_event_after], self._error_event(request.wire, reply)]
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            *((k.encode(), v.encode()) for k, v in reply.headers.items()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for sent, data in enumerate(events):
            if reply.cut_after is not None and sent >= reply.cut_after:
                raise _Cut()
            if sent and reply.chunk_delay:
                await self._pause(reply.chunk_delay)
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
