"""Server-sent event streams: parsing, reading text and usage from them as they pass, and
converting an Anthropic stream into OpenAI chunks and back.

A reader watches the upstream's events without holding them back: it accumulates the text
and tool calls (for output checks) and picks up usage — OpenAI's final usage chunk,
Anthropic's ``message_start`` plus ``message_delta``. A stream that never reports usage
leaves the reader's ``usage`` at ``None``: unknown, not zero.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from warden.upstream._types import StreamEvent, ToolCall, Usage, Wire
from warden.upstream._wire import (
    Parts,
    finish_from_anthropic,
    stop_to_anthropic,
    usage_from_anthropic,
    usage_from_openai,
    usage_to_anthropic,
    usage_to_openai,
)

DONE = "[DONE]"


async def iter_events(lines: AsyncIterator[str]) -> AsyncIterator[StreamEvent]:
    """Events of an SSE stream given its lines (line endings removed). Comments are
    dropped; an event cut off before its closing blank line is never yielded."""
    name: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield StreamEvent("\n".join(data), name)
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value


class StreamReader(Protocol):
    """Reads one wire's stream events as they pass."""

    usage: Usage | None
    done: bool
    error: dict[str, Any] | None
    id: str
    model: str | None
    finish_reason: str | None

    def feed(self, event: StreamEvent) -> Any:
        """Take in one event; returns its decoded data (``None`` for OpenAI's ``[DONE]``)."""
        ...

    def parts(self) -> Parts:
        """What the stream said so far."""
        ...


def _json(event: StreamEvent) -> Any:
    try:
        return json.loads(event.data)
    except json.JSONDecodeError:
        raise ValueError(f"a stream event is not JSON: {event.data[:120]!r}") from None


class OpenAIStreamReader:
    """Reads OpenAI ``chat.completion.chunk`` events (choice 0)."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.error: dict[str, Any] | None = None
        self.id = ""
        self.model: str | None = None
        self.finish_reason: str | None = None
        self._text: list[str] = []
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, [argument pieces]]

    def feed(self, event: StreamEvent) -> Any:
        if event.data == DONE:
            self.done = True
            return None
        chunk = _json(event)
        if not isinstance(chunk, dict):
            raise ValueError("a stream chunk is not an object")
        if isinstance(chunk.get("error"), dict):
            self.error = chunk
            return chunk
        self.id = self.id or str(chunk.get("id") or "")
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self._text.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                slot = self._calls.setdefault(int(call.get("index", 0)), ["", "", []])
                if call.get("id"):
                    slot[0] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    slot[1] += function["name"]
                if function.get("arguments"):
                    slot[2].append(function["arguments"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        usage = usage_from_openai(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        return chunk

    def parts(self) -> Parts:
        calls = tuple(
            ToolCall(slot[0], slot[1], "".join(slot[2])) for _, slot in sorted(self._calls.items())
        )
        return Parts(
            self.id, self.model, "".join(self._text), calls, self.finish_reason, self.usage
        )


class AnthropicStreamReader:
    """Reads Anthropic message stream events."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.error: dict[str, Any] | None = None
        self.id = ""
        self.model: str | None = None
        self.finish_reason: str | None = None
        self._start_usage: Any = None
        # block index -> ["text", [pieces]] or ["tool_use", id, name, [pieces], start input]
        self._blocks: dict[int, list[Any]] = {}

    def feed(self, event: StreamEvent) -> Any:
        data = _json(event)
        if not isinstance(data, dict):
            raise ValueError("a stream event is not an object")
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = data.get("message") or {}
            self.id = str(message.get("id") or "")
            self.model = message.get("model") if isinstance(message.get("model"), str) else None
            self._start_usage = message.get("usage")
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            index = int(data.get("index", len(self._blocks)))
            if block.get("type") == "text":
                self._blocks[index] = ["text", [str(block.get("text", ""))]]
            elif block.get("type") == "tool_use":
                ident, name = str(block.get("id", "")), str(block.get("name", ""))
                self._blocks[index] = ["tool_use", ident, name, [], block.get("input")]
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            block = self._blocks.get(int(data.get("index", -1)))
            if block is not None and delta.get("type") == "text_delta":
                block[1].append(str(delta.get("text", "")))
            elif block is not None and delta.get("type") == "input_json_delta":
                block[3].append(str(delta.get("partial_json", "")))
        elif kind == "message_delta":
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop is not None:
                self.finish_reason = finish_from_anthropic(stop)
            # message_delta's counts are cumulative: the last one is the total
            usage = usage_from_anthropic(data.get("usage"), input_from=self._start_usage)
            if usage is not None:
                self.usage = usage
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = data
        return data

    def parts(self) -> Parts:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for _, block in sorted(self._blocks.items()):
            if block[0] == "text":
                texts.append("".join(block[1]))
            else:
                arguments = "".join(block[3])
                if not arguments:
                    start = block[4]
                    arguments = json.dumps(start, separators=(",", ":")) if start else "{}"
                calls.append(ToolCall(block[1], block[2], arguments))
        return Parts(
            self.id, self.model, "".join(texts), tuple(calls), self.finish_reason, self.usage
        )


def new_reader(wire: Wire) -> StreamReader:
    return OpenAIStreamReader() if wire == "openai" else AnthropicStreamReader()


# ---------------------------------------------------------------- what the client gets


class StreamWriter(Protocol):
    """Turns the upstream's events into the events the client gets."""

    def feed(self, event: StreamEvent, data: Any, reader: StreamReader) -> list[StreamEvent]: ...

    def finish(self, reader: StreamReader) -> list[StreamEvent]:
        """Events that close the stream when the upstream ended it without them."""
        ...


class Passthrough:
    """Same wire: every event goes on as it came, except OpenAI's usage chunk when Warden
    asked for it on the client's behalf (a client that did not ask may not expect a
    chunk without choices)."""

    def __init__(self, hide_usage_chunk: bool) -> None:
        self.hide_usage_chunk = hide_usage_chunk

    def feed(self, event: StreamEvent, data: Any, reader: StreamReader) -> list[StreamEvent]:
        if (
            self.hide_usage_chunk
            and isinstance(data, dict)
            and not data.get("choices")
            and data.get("usage") is not None
        ):
            return []
        return [event]

    def finish(self, reader: StreamReader) -> list[StreamEvent]:
        return []


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class AnthropicToOpenAI:
    """An Anthropic message stream written as OpenAI chat completion chunks."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.created = int(time.time())
        self.tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self.closed = False

    def _chunk(
        self, reader: StreamReader, delta: dict[str, Any], finish: str | None = None
    ) -> StreamEvent:
        chunk: dict[str, Any] = {
            "id": f"chatcmpl-{reader.id}",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": reader.model or "",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return StreamEvent(_dumps(chunk))

    def feed(self, event: StreamEvent, data: Any, reader: StreamReader) -> list[StreamEvent]:
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "message_start":
            return [self._chunk(reader, {"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") != "tool_use":
                return []
            index = self.tool_index.setdefault(int(data.get("index", 0)), len(self.tool_index))
            call = {
                "index": index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk(reader, {"tool_calls": [call]})]
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk(reader, {"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                found = self.tool_index.get(int(data.get("index", 0)))
                if found is None:
                    return []
                piece = {"index": found, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk(reader, {"tool_calls": [piece]})]
            return []
        if kind == "message_delta":
            stop = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk(reader, {}, finish_from_anthropic(stop) or "stop")]
        if kind == "message_stop":
            return self._close(reader)
        if kind == "error":
            error = data.get("error") or {}
            said = {"message": error.get("message"), "type": error.get("type")}
            return [StreamEvent(_dumps({"error": said}))]
        return []

    def _close(self, reader: StreamReader) -> list[StreamEvent]:
        if self.closed:
            return []
        self.closed = True
        out = []
        if self.include_usage and reader.usage is not None:
            chunk = {
                "id": f"chatcmpl-{reader.id}",
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": reader.model or "",
                "choices": [],
                "usage": usage_to_openai(reader.usage),
            }
            out.append(StreamEvent(_dumps(chunk)))
        out.append(StreamEvent(DONE))
        return out

    def finish(self, reader: StreamReader) -> list[StreamEvent]:
        return []  # without message_stop the stream is cut: no false "[DONE]"


class OpenAIToAnthropic:
    """An OpenAI chunk stream written as Anthropic message events."""

    def __init__(self) -> None:
        self.started = False
        self.closed = False
        self.block = -1  # index of the open content block, -1 when none is open
        self.block_kind = ""
        self.tool_block: dict[int, int] = {}  # OpenAI tool index -> Anthropic block index
        self.next_block = 0

    @staticmethod
    def _event(kind: str, body: dict[str, Any]) -> StreamEvent:
        return StreamEvent(_dumps({"type": kind, **body}), kind)

    def _start(self, reader: StreamReader) -> list[StreamEvent]:
        if self.started:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": f"msg_{reader.id}",
            "type": "message",
            "role": "assistant",
            "model": reader.model or "",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # OpenAI reports usage only at the end; the final message_delta carries it
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [self._event("message_start", {"message": message})]

    def _delta(self, index: int, piece: dict[str, Any]) -> StreamEvent:
        return self._event("content_block_delta", {"index": index, "delta": piece})

    def _close_block(self) -> list[StreamEvent]:
        if self.block < 0:
            return []
        event = self._event("content_block_stop", {"index": self.block})
        self.block = -1
        return [event]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[StreamEvent]:
        out = self._close_block()
        self.block, self.block_kind = self.next_block, kind
        self.next_block += 1
        out.append(
            self._event("content_block_start", {"index": self.block, "content_block": block})
        )
        return out

    def feed(self, event: StreamEvent, data: Any, reader: StreamReader) -> list[StreamEvent]:
        if data is None:  # [DONE]
            return self._close(reader)
        if not isinstance(data, dict):
            return []
        if isinstance(data.get("error"), dict):
            error = data["error"]
            said = {"type": error.get("type") or "api_error", "message": error.get("message")}
            return [self._event("error", {"error": said})]
        out = self._start(reader)
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.block < 0 or self.block_kind != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                piece = {"type": "text_delta", "text": text}
                out.append(self._delta(self.block, piece))
            for call in delta.get("tool_calls") or ():
                index = int(call.get("index", 0))
                function = call.get("function") or {}
                if index not in self.tool_block:
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or "",
                        "name": function.get("name") or "",
                        "input": {},
                    }
                    out += self._open_block("tool_use", block)
                    self.tool_block[index] = self.block
                if function.get("arguments"):
                    piece = {"type": "input_json_delta", "partial_json": function["arguments"]}
                    out.append(self._delta(self.tool_block[index], piece))
        return out

    def _close(self, reader: StreamReader) -> list[StreamEvent]:
        if self.closed:
            return []
        self.closed = True
        out = self._start(reader) + self._close_block()
        usage = (
            usage_to_anthropic(reader.usage)
            if reader.usage is not None
            # the shape requires output_tokens; Warden's own record says "unknown"
            else {"output_tokens": 0}
        )
        stop = stop_to_anthropic(reader.finish_reason) or "end_turn"
        delta = {"stop_reason": stop, "stop_sequence": None}
        out.append(self._event("message_delta", {"delta": delta, "usage": usage}))
        out.append(self._event("message_stop", {}))
        return out

    def finish(self, reader: StreamReader) -> list[StreamEvent]:
        # Some OpenAI-compatible servers end a complete stream without "[DONE]": a
        # finish reason is the sign that the answer itself is whole.
        return self._close(reader) if reader.finish_reason is not None else []


def new_writer(upstream: Wire, client: Wire, *, client_wants_usage: bool) -> StreamWriter:
    if upstream == client:
        return Passthrough(hide_usage_chunk=upstream == "openai" and not client_wants_usage)
    if upstream == "anthropic":
        return AnthropicToOpenAI(include_usage=client_wants_usage)
    return OpenAIToAnthropic()
