"""Calling a model upstream over HTTP: one attempt's deadline, retries with backoff that
honour ``Retry-After``, a circuit breaker per upstream, and streams passed through as they
come.

``Upstream`` holds what both kinds share; ``OpenAIUpstream`` and ``AnthropicUpstream`` add
their paths, headers and body rules. Several upstreams can share one ``httpx.AsyncClient``
(``new_client``) so connections to a host are pooled across them.

A stream is retried only while nothing of it has been passed on: opening it reads up to
the first event the caller will see, so a refusal, a dead connection or an error event at
the very start is retried like any failed call, and a break after that is reported as
``UpstreamStreamInterrupted``.
"""

from __future__ import annotations

import asyncio
import json
import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, NoReturn, Self, TypedDict, TypeVar

import httpx

from warden.errors import UsageError
from warden.pipeline._execute import CircuitBreaker
from warden.secrets import REDACTED, Secret
from warden.upstream._errors import (
    Reason,
    UpstreamCircuitOpen,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResponseError,
    UpstreamStatusError,
    UpstreamStreamInterrupted,
    UpstreamTimeout,
)
from warden.upstream._sse import StreamReader, StreamWriter, iter_events, new_reader, new_writer
from warden.upstream._types import (
    ChatReply,
    ChatRequest,
    Route,
    StreamEvent,
    ToolCall,
    Usage,
    Wire,
)
from warden.upstream._wire import Parts, error_message, read_reply, write_reply

#: Where the credential comes from: the value, a ``Secret``, or a function called for each
#: request (so a rotated or freshly minted credential is picked up).
KeySource = str | Secret | Callable[[], str | Secret] | None

# Failures that say something about the upstream's health (a 400 says nothing about it).
_BREAKER_REASONS = frozenset(
    {"rate_limited", "server_error", "timeout", "connect_error", "bad_response"}
)
# Error types of both shapes, for an error that arrives as a stream event instead of a status.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "api_error": 500,
    "server_error": 500,
    "overloaded_error": 529,
}
_MAX_ERROR_TEXT = 2000

_T = TypeVar("_T")


class UpstreamOptions(TypedDict, total=False):
    """The options every kind of upstream takes (see ``Upstream``)."""

    name: str | None
    timeout: float
    connect_timeout: float
    max_retries: int
    backoff: float
    max_backoff: float
    max_retry_after: float
    failure_threshold: int
    reset_after: float
    headers: Mapping[str, str] | None
    client: httpx.AsyncClient | None
    sleep: Callable[[float], Awaitable[None]]


def new_client(*, max_connections: int = 256) -> httpx.AsyncClient:
    """An HTTP client to share between upstreams: one connection pool for all of them.
    Timeouts are set per request by each upstream, so the client carries none."""
    return httpx.AsyncClient(
        timeout=None,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the upstream asked to wait: ``retry-after-ms`` (OpenAI), or ``Retry-After``
    as seconds or an HTTP date."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def _reason_for(status: int) -> Reason:
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    return "client_error"


class Upstream(ABC):
    """A model upstream: where to send chat requests, with what credential, how patiently.

    ``timeout`` bounds one attempt: the whole answer of a plain call, and for a stream the
    wait for its first event and then the longest silence between two events.
    ``max_retries`` more attempts are made on 408/429/5xx, timeouts and lost connections,
    waiting ``backoff`` seconds doubled each time (with jitter, at most ``max_backoff``)
    or what the upstream's ``Retry-After`` asks — unless it asks for more than
    ``max_retry_after``, in which case the call fails at once so a fallback chain can move
    on instead of stalling. The circuit breaker opens after ``failure_threshold``
    consecutive failures of the upstream and lets a call probe it after ``reset_after``
    seconds; a refused request (4xx) neither counts nor resets it.

    The credential is sent in the upstream's own header and nowhere else: it is not in the
    ``repr``, and it is scrubbed from every error body and message.
    """

    wire: ClassVar[Wire]
    #: path of the chat endpoint, appended to ``base_url``
    path: ClassVar[str]

    def __init__(
        self,
        base_url: str,
        api_key: KeySource = None,
        *,
        name: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
        failure_threshold: int = 5,
        reset_after: float = 30.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        for label, value in (
            ("timeout", timeout),
            ("connect_timeout", connect_timeout),
            ("reset_after", reset_after),
        ):
            if not value > 0:
                raise UsageError(f"{label} must be positive, got {value!r}")
        if max_retries < 0 or backoff < 0 or max_backoff < 0 or max_retry_after < 0:
            raise UsageError("max_retries, backoff, max_backoff and max_retry_after must be >= 0")
        if failure_threshold < 1:
            raise UsageError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + self.path
        self.name = name or httpx.URL(self.base_url).host or self.base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.breaker = CircuitBreaker(failure_threshold, reset_after)
        self._api_key = api_key
        self._headers = dict(headers or {})
        self._http_timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self._owns_client = client is None
        self._client = client if client is not None else new_client()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Close the HTTP client if this upstream made it (a shared one is the caller's)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ what subclasses say

    @abstractmethod
    def _auth_headers(self, key: str | None) -> dict[str, str]:
        """The headers that carry the credential (and any the kind always needs)."""

    @abstractmethod
    def _body(self, request: ChatRequest, model: str, stream: bool) -> dict[str, Any]:
        """The body to send for ``request``, converted to this upstream's shape if needed."""

    def _query(self) -> Mapping[str, str]:
        return {}

    @staticmethod
    def _client_wants_usage(request: ChatRequest) -> bool:
        """Whether the caller's stream should carry usage: Anthropic's always does; an
        OpenAI client gets the usage chunk only if it asked for it."""
        if request.wire == "anthropic":
            return True
        options = request.extra.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    # ------------------------------------------------------------ calls

    async def chat(self, request: ChatRequest, *, model: str | None = None) -> ChatReply:
        """Send ``request`` (as a whole, not streamed) and return the reply in the request's
        shape. ``model`` replaces the request's model (the upstream's id for it)."""
        chosen = self._model(request, model)
        payload = self._encode(self._body(request, chosen, stream=False))

        async def attempt() -> tuple[httpx.Response, Any]:
            return await self._send_json(payload)

        (response, raw), attempts = await self._with_retries(attempt)
        try:
            parts = read_reply(self.wire, raw)
        except ValueError as exc:
            raise self._error(
                UpstreamResponseError, f"unreadable reply: {exc}", "bad_response", attempts
            ) from None
        body = raw if request.wire == self.wire else write_reply(request.wire, parts)
        return ChatReply(
            body=body,
            wire=request.wire,
            text=parts.text,
            tool_calls=parts.tool_calls,
            finish_reason=parts.finish_reason,
            usage=parts.usage,
            model=parts.model,
            route=Route(self.name, chosen, attempts),
            raw=raw,
            headers=dict(response.headers),
        )

    async def open_stream(self, request: ChatRequest, *, model: str | None = None) -> ChatStream:
        """Open a streamed call; the returned stream is open and must be iterated to its end
        or closed (``aclose``, or ``async with``). Failures up to its first event are
        retried; its events come in the request's shape."""
        chosen = self._model(request, model)
        payload = self._encode(self._body(request, chosen, stream=True))

        async def attempt() -> ChatStream:
            return await self._open(payload, request)

        stream, attempts = await self._with_retries(attempt)
        stream.route = Route(self.name, chosen, attempts)
        return stream

    @asynccontextmanager
    async def stream(
        self, request: ChatRequest, *, model: str | None = None
    ) -> AsyncIterator[ChatStream]:
        """``open_stream`` as a context manager that closes the stream on the way out."""
        opened = await self.open_stream(request, model=model)
        try:
            yield opened
        finally:
            await opened.aclose()

    # ------------------------------------------------------------ one attempt

    def _model(self, request: ChatRequest, model: str | None) -> str:
        chosen = model or request.model
        if not chosen:
            raise UsageError("no model: set the request's model or pass model=")
        return chosen

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        # ASCII-escaped: a lone surrogate in a client's text cannot break the encoding
        return json.dumps(body, separators=(",", ":")).encode()

    def _key(self) -> str | None:
        source = self._api_key() if callable(self._api_key) else self._api_key
        return source.value if isinstance(source, Secret) else source

    def _build(self, payload: bytes, key: str | None, stream: bool) -> httpx.Request:
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            **self._headers,
            **self._auth_headers(key),
        }
        return self._client.build_request(
            "POST",
            self.url,
            params=self._query() or None,
            content=payload,
            headers=headers,
            timeout=self._http_timeout,
        )

    def _error(
        self,
        cls: type[UpstreamError],
        detail: str,
        reason: Reason,
        attempts: int = 0,
        *,
        retryable: bool = False,
        status: int | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> UpstreamError:
        return cls(
            f"{self.name}: {detail}",
            upstream=self.name,
            reason=reason,
            status=status,
            retryable=retryable,
            body=body,
            retry_after=retry_after,
            attempts=attempts,
        )

    def _transport_error(self, exc: Exception) -> UpstreamError:
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return self._error(
                UpstreamTimeout, f"no answer within {self.timeout:g}s", "timeout", retryable=True
            )
        # httpx's messages name the host and the failure, never the request's headers
        return self._error(
            UpstreamConnectError,
            f"connection failed ({type(exc).__name__}: {exc})",
            "connect_error",
            retryable=True,
        )

    def _status_error(
        self, response: httpx.Response, content: bytes, key: str | None
    ) -> UpstreamError:
        text = content.decode("utf-8", errors="replace")
        if key:
            text = text.replace(key, REDACTED)
        body: Any
        try:
            body = json.loads(text)
        except ValueError:
            body = text[:_MAX_ERROR_TEXT]
        status = response.status_code
        reason = _reason_for(status)
        retryable = reason != "client_error"
        # Both official SDKs obey the upstream's own verdict when it gives one.
        verdict = response.headers.get("x-should-retry")
        if verdict in ("true", "false"):
            retryable = verdict == "true"
        said = error_message(body)
        return self._error(
            UpstreamStatusError,
            f"HTTP {status} ({reason})" + (f": {said[:300]}" if said else ""),
            reason,
            retryable=retryable,
            status=status,
            body=body,
            retry_after=_retry_after(response.headers),
        )

    async def _send_json(self, payload: bytes) -> tuple[httpx.Response, Any]:
        key = self._key()
        request = self._build(payload, key, stream=False)
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.send(request)
        except (TimeoutError, httpx.TransportError) as exc:
            raise self._transport_error(exc) from None
        if not response.is_success:
            raise self._status_error(response, response.content, key)
        try:
            return response, response.json()
        except ValueError:
            raise self._error(
                UpstreamResponseError,
                f"HTTP {response.status_code} but the body is not JSON "
                f"({response.headers.get('content-type', 'no content type')})",
                "bad_response",
                status=response.status_code,
            ) from None

    async def _open(self, payload: bytes, request: ChatRequest) -> ChatStream:
        key = self._key()
        built = self._build(payload, key, stream=True)
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.send(built, stream=True)
                if not response.is_success:
                    raise self._status_error(response, await response.aread(), key)
                kind = response.headers.get("content-type", "")
                if not kind.startswith("text/event-stream"):
                    raise self._error(
                        UpstreamResponseError,
                        f"asked for a stream, got {kind or 'no content type'}",
                        "bad_response",
                        status=response.status_code,
                    )
                stream = ChatStream(self, response, request)
                await stream._prime()
                return stream
        except BaseException as exc:
            if response is not None:
                await response.aclose()
            if isinstance(exc, TimeoutError | httpx.TransportError):
                raise self._transport_error(exc) from None
            raise

    # ------------------------------------------------------------ retries

    async def _with_retries(self, attempt: Callable[[], Awaitable[_T]]) -> tuple[_T, int]:
        attempts = 0
        last: UpstreamError | None = None
        while True:
            if not self.breaker.allow():
                if last is not None:
                    raise last  # the breaker opened on this call's own failures
                raise self._error(
                    UpstreamCircuitOpen,
                    f"not tried: circuit open after {self.breaker.failures} consecutive failures",
                    "circuit_open",
                    retryable=True,
                )
            attempts += 1
            try:
                result = await attempt()
            except UpstreamError as exc:
                exc.attempts = attempts
                if exc.reason in _BREAKER_REASONS:
                    self.breaker.record(False)
                delay = self._delay(exc, attempts)
                if delay is None:
                    raise
                last = exc
                await self._sleep(delay)
                continue
            self.breaker.record(True)
            return result, attempts

    def _delay(self, exc: UpstreamError, attempts: int) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up now."""
        if not exc.retryable or attempts > self.max_retries:
            return None
        if exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= self.max_retry_after else None
        cap = min(self.max_backoff, self.backoff * 2.0 ** (attempts - 1))
        # "Equal jitter": at least half the backoff, so retries spread without collapsing to 0.
        return cap / 2 + random.uniform(0, cap / 2)


class ChatStream:
    """An open streamed call: iterate it for the events to pass on, in the shape of the
    request; read ``usage``, ``text`` and ``tool_calls`` as they accumulate (final once the
    iteration ends).

    ``usage`` stays ``None`` when the upstream never reported it (a stream cut short, a
    server that ignores ``stream_options``): unknown, never zero. ``complete`` says
    whether the upstream ended the stream properly. ``error`` holds an error the upstream
    sent inside the stream after it began (the event itself is passed on as it came).
    """

    def __init__(self, upstream: Upstream, response: httpx.Response, request: ChatRequest) -> None:
        self.upstream = upstream
        self.wire: Wire = request.wire
        self.route = Route(upstream.name, request.model or "")
        self.error: UpstreamError | None = None
        self._response = response
        self._events = iter_events(response.aiter_lines())
        self._reader: StreamReader = new_reader(upstream.wire)
        self._writer: StreamWriter = new_writer(
            upstream.wire,
            request.wire,
            client_wants_usage=upstream._client_wants_usage(request),
        )
        self._pending: deque[StreamEvent] = deque()
        self._iterated = False
        self._closed = False

    # ---- what the stream said

    @property
    def usage(self) -> Usage | None:
        return self._reader.usage

    @property
    def complete(self) -> bool:
        return self._reader.done

    @property
    def text(self) -> str:
        return self._reader.parts().text

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self._reader.parts().tool_calls

    @property
    def finish_reason(self) -> str | None:
        return self._reader.finish_reason

    @property
    def model(self) -> str | None:
        return self._reader.model

    def reply(self) -> ChatReply:
        """The stream so far as one reply (after the iteration: the whole answer), with a
        body assembled in the request's shape."""
        parts: Parts = self._reader.parts()
        return ChatReply(
            body=write_reply(self.wire, parts),
            wire=self.wire,
            text=parts.text,
            tool_calls=parts.tool_calls,
            finish_reason=parts.finish_reason,
            usage=parts.usage,
            model=parts.model,
            route=self.route,
            raw=write_reply(self.upstream.wire, parts),
            headers=dict(self._response.headers),
        )

    # ---- reading

    def _take(self, event: StreamEvent) -> list[StreamEvent]:
        try:
            data = self._reader.feed(event)
        except ValueError as exc:
            raise self.upstream._error(
                UpstreamResponseError, f"unreadable stream: {exc}", "bad_response"
            ) from None
        return self._writer.feed(event, data, self._reader)

    async def _prime(self) -> None:
        """Read up to the first event the caller will see, so a failure before it can
        still be retried. Raises what the caller should treat as a failed attempt."""
        async for event in self._events:
            out = self._take(event)
            if self._reader.error is not None:
                self._raise_error_event(self._reader.error)
            if out:
                self._pending.extend(out)
                return
        self._pending.extend(self._writer.finish(self._reader))
        if not self._pending:
            raise self.upstream._error(
                UpstreamConnectError,
                "the stream ended before its first event",
                "connect_error",
                retryable=True,
            )

    def _raise_error_event(self, data: dict[str, Any]) -> NoReturn:
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        assert isinstance(error, dict)
        code = error.get("code")
        status = (
            code
            if isinstance(code, int) and 400 <= code < 600
            else _ERROR_TYPE_STATUS.get(str(error.get("type")), 500)
        )
        reason = _reason_for(status)
        message = error_message(data) or "error event"
        raise self.upstream._error(
            UpstreamStatusError,
            f"error event at the start of the stream ({reason}): {message[:300]}",
            reason,
            retryable=reason != "client_error",
            status=status,
            body=data,
        )

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if self._iterated:
            raise UsageError("a ChatStream can be iterated only once")
        self._iterated = True
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        try:
            while self._pending:
                yield self._pending.popleft()
            async for event in self._events:
                for out in self._take(event):
                    yield out
                if self._reader.error is not None and self.error is None:
                    self.error = self._interrupted("the upstream sent an error event")
            for out in self._writer.finish(self._reader):
                yield out
        except (TimeoutError, httpx.TransportError) as exc:
            self.error = self._interrupted(f"{type(exc).__name__}: {exc}")
            raise self.error from None
        except UpstreamError as exc:
            self.upstream.breaker.record(False)
            self.error = exc
            raise
        finally:
            await self.aclose()

    def _interrupted(self, detail: str) -> UpstreamError:
        self.upstream.breaker.record(False)
        message = error_message(self._reader.error) if self._reader.error else None
        return self.upstream._error(
            UpstreamStreamInterrupted,
            f"stream broke after it began ({detail}"
            + (f": {message[:300]}" if message else "")
            + ")"
            + ("; its usage is unknown" if self._reader.usage is None else ""),
            "stream_interrupted",
            attempts=self.route.attempts,
            body=self._reader.error,
        )

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
