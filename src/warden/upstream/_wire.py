"""What each wire shape's replies look like: reading them into a neutral form and writing
that form back in either shape.

``Parts`` is the common ground of an OpenAI chat completion and an Anthropic message: id,
model, text, tool calls, finish reason and usage. Reading a body into ``Parts`` and writing
it out in the other shape is how a reply is converted; writing it in the same shape is how
a streamed reply is assembled into one body. Readers raise ``ValueError`` on a body of the
wrong shape; the client turns that into ``UpstreamResponseError``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from warden.upstream._types import ToolCall, Usage, Wire

# Anthropic's stop reasons in OpenAI's words, and back. Unknown reasons pass unchanged.
_TO_OPENAI_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_TO_ANTHROPIC_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_from_anthropic(stop_reason: Any) -> str | None:
    if not isinstance(stop_reason, str):
        return None
    return _TO_OPENAI_FINISH.get(stop_reason, stop_reason)


def stop_to_anthropic(finish_reason: str | None) -> str | None:
    if finish_reason is None:
        return None
    return _TO_ANTHROPIC_STOP.get(finish_reason, "end_turn")


def _count(value: Any) -> int | None:
    # bool is an int in Python; a count of True is a malformed body, not 1 token
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def usage_from_openai(usage: Any) -> Usage | None:
    """OpenAI's ``usage`` object; ``None`` when absent or without both counts."""
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    return Usage(prompt, completion, cache_read_tokens=min(cached or 0, prompt))


def usage_from_anthropic(usage: Any, *, input_from: Any = None) -> Usage | None:
    """Anthropic's ``usage`` object. Its ``input_tokens`` excludes cached tokens, which are
    added back (see ``Usage``). In a stream, the input counts come from ``message_start``
    (``input_from``) unless the final ``message_delta`` repeats them."""
    if not isinstance(usage, dict):
        return None
    output = _count(usage.get("output_tokens"))
    if output is None:
        return None

    def pick(key: str) -> int | None:
        found = _count(usage.get(key))
        if found is None and isinstance(input_from, dict):
            found = _count(input_from.get(key))
        return found

    uncached = pick("input_tokens")
    if uncached is None:
        return None
    read = pick("cache_read_input_tokens") or 0
    write = pick("cache_creation_input_tokens") or 0
    return Usage(uncached + read + write, output, cache_read_tokens=read, cache_write_tokens=write)


def usage_to_openai(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }


def usage_to_anthropic(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }


@dataclass(frozen=True, slots=True)
class Parts:
    """What both wire shapes of a reply say, in neutral terms."""

    id: str
    model: str | None
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None
    usage: Usage | None


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    raise ValueError(f"message content is a {type(content).__name__}, not text or parts")


def read_openai_reply(body: Any) -> Parts:
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise ValueError("not a chat completion: no 'choices' list")
    choices = body["choices"]
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = first.get("message") or {}
    if not isinstance(message, dict):
        raise ValueError("not a chat completion: 'message' is not an object")
    calls: list[ToolCall] = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError("not a chat completion: a tool call has no function name")
        arguments = function.get("arguments")
        calls.append(
            ToolCall(
                str(call.get("id") or ""),
                function["name"],
                arguments if isinstance(arguments, str) else json.dumps(arguments),
            )
        )
    finish = first.get("finish_reason")
    return Parts(
        id=str(body.get("id") or ""),
        model=body.get("model") if isinstance(body.get("model"), str) else None,
        text=_text_of(message.get("content")),
        tool_calls=tuple(calls),
        finish_reason=finish if isinstance(finish, str) else None,
        usage=usage_from_openai(body.get("usage")),
    )


def read_anthropic_reply(body: Any) -> Parts:
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise ValueError("not a message: no 'content' list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in body["content"]:
        if not isinstance(block, dict):
            raise ValueError("not a message: a content block is not an object")
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append(
                ToolCall(
                    str(block.get("id") or ""),
                    str(block.get("name") or ""),
                    json.dumps(block.get("input", {}), separators=(",", ":")),
                )
            )
    return Parts(
        id=str(body.get("id") or ""),
        model=body.get("model") if isinstance(body.get("model"), str) else None,
        text="".join(texts),
        tool_calls=tuple(calls),
        finish_reason=finish_from_anthropic(body.get("stop_reason")),
        usage=usage_from_anthropic(body.get("usage")),
    )


def read_reply(wire: Wire, body: Any) -> Parts:
    return read_openai_reply(body) if wire == "openai" else read_anthropic_reply(body)


def openai_body(parts: Parts) -> dict[str, Any]:
    """A chat completion saying what ``parts`` says."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": parts.text if parts.text or not parts.tool_calls else None,
        "refusal": None,
    }
    if parts.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in parts.tool_calls
        ]
    body: dict[str, Any] = {
        "id": parts.id or "chatcmpl-warden",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": parts.model or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": parts.finish_reason,
            }
        ],
    }
    if parts.usage is not None:
        body["usage"] = usage_to_openai(parts.usage)
    return body


def anthropic_body(parts: Parts) -> dict[str, Any]:
    """An Anthropic message saying what ``parts`` says."""
    content: list[dict[str, Any]] = []
    if parts.text or not parts.tool_calls:
        content.append({"type": "text", "text": parts.text})
    for call in parts.tool_calls:
        try:
            args = json.loads(call.arguments) if call.arguments else {}
        except json.JSONDecodeError:
            # The model wrote invalid JSON; Anthropic's shape needs an object, so the text
            # is kept where a reader can still see it.
            args = {"_raw_arguments": call.arguments}
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": args})
    body: dict[str, Any] = {
        "id": parts.id or "msg_warden",
        "type": "message",
        "role": "assistant",
        "model": parts.model or "",
        "content": content,
        "stop_reason": stop_to_anthropic(parts.finish_reason),
        "stop_sequence": None,
    }
    body["usage"] = (
        usage_to_anthropic(parts.usage)
        if parts.usage is not None
        # Anthropic's shape requires usage; zeros here are only what the client reads —
        # Warden's own record of this reply still says "unknown".
        else {"input_tokens": 0, "output_tokens": 0}
    )
    return body


def write_reply(wire: Wire, parts: Parts) -> dict[str, Any]:
    return openai_body(parts) if wire == "openai" else anthropic_body(parts)


def error_message(body: Any) -> str | None:
    """The human-readable message of an error body of either shape, if it has one."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip().splitlines()[0]
    return None
