"""Converting a chat request between the OpenAI and Anthropic wire shapes.

Only what maps one to one is converted: system instructions, text and image content,
tools and tool calls with their results, the token cap, temperature, top_p, stop
sequences, the end user. A parameter that changes the answer and has no counterpart on the
other side (``n > 1``, a JSON ``response_format``, ``top_k``, extended thinking, ...) is
refused with ``InvalidInputError`` naming it — silently dropping it would hand the caller
an answer to a question it did not ask. Parameters with no effect on the answer's content
(``store``, ``service_tier``, a ``seed``, which OpenAI itself only honours as best effort)
are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from warden.errors import InvalidInputError
from warden.upstream._types import AnthropicChatRequest, OpenAIChatRequest

# OpenAI parameters dropped on the way to Anthropic; a value is dropped only when it is
# one of the listed harmless values (``...``: any value).
_OPENAI_DROPPED: dict[str, tuple[Any, ...]] = {
    "stream_options": (...,),
    "store": (...,),
    "metadata": (...,),
    "service_tier": (...,),
    "seed": (...,),
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
}
_ANTHROPIC_DROPPED: dict[str, tuple[Any, ...]] = {
    "service_tier": (...,),
    "top_k": (None,),
    "thinking": (None, {"type": "disabled"}),
}


def _refuse(direction: str, names: Iterable[str]) -> None:
    listed = ", ".join(sorted(names))
    if listed:
        raise InvalidInputError(
            f"cannot convert a request {direction}: no equivalent for {listed}; remove "
            "them or send the request to an upstream of its own kind"
        )


def _unconvertible(extra: dict[str, Any], dropped: dict[str, tuple[Any, ...]]) -> list[str]:
    refused = []
    for name, value in extra.items():
        allowed = dropped.get(name)
        if allowed is None or (... not in allowed and value not in allowed):
            refused.append(name)
    return refused


# ---------------------------------------------------------------- OpenAI → Anthropic


def _data_url_source(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, _, data = url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        if encoding != "base64" or not data:
            raise InvalidInputError("an image data URL must be base64-encoded")
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _openai_part_to_block(part: Any) -> dict[str, Any]:
    if isinstance(part, dict) and part.get("type") == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if isinstance(part, dict) and part.get("type") == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise InvalidInputError("an image_url part has no url")
        return {"type": "image", "source": _data_url_source(url)}
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    raise InvalidInputError(f"cannot convert a {kind!r} content part to Anthropic's shape")


def _openai_content_to_anthropic(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return [_openai_part_to_block(p) for p in content]
    raise InvalidInputError(f"message content must be text or parts, not {content!r:.60}")


def _plain_text(content: Any, what: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise InvalidInputError(f"{what} may hold only text parts")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    if content is None:
        return ""
    raise InvalidInputError(f"{what} must be text, not {content!r:.60}")


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _append(messages: list[dict[str, Any]], role: str, content: str | list[dict[str, Any]]) -> None:
    # Anthropic wants user and assistant turns to alternate: consecutive messages of one
    # role (several tool results in a row, say) become one message.
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"] = _as_blocks(messages[-1]["content"]) + _as_blocks(content)
    else:
        messages.append({"role": role, "content": content})


def _tool_use_input(arguments: Any, name: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except json.JSONDecodeError:
        raise InvalidInputError(
            f"tool call {name!r} has arguments that are not JSON; Anthropic needs an object"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"tool call {name!r}: arguments must be a JSON object")
    return value


def _openai_messages(
    messages: list[dict[str, Any]],
) -> tuple[str | None, list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(_plain_text(content, f"messages[{i}] ({role})"))
        elif role == "user":
            _append(out, "user", _openai_content_to_anthropic(content))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = _plain_text(content, f"messages[{i}] (assistant)")
            if text:
                blocks.append({"type": "text", "text": text})
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                name = str(function.get("name", ""))
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id", "")),
                        "name": name,
                        "input": _tool_use_input(function.get("arguments"), name),
                    }
                )
            if not message.get("tool_calls") and isinstance(content, str):
                _append(out, "assistant", content)
            else:
                _append(out, "assistant", blocks)
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id", "")),
                "content": _plain_text(content, f"messages[{i}] (tool)"),
            }
            _append(out, "user", [result])
        else:
            raise InvalidInputError(f"messages[{i}]: cannot convert a {role!r} message")
    return ("\n\n".join(system) if system else None), out


def _openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidInputError(f"cannot convert a {tool.get('type')!r} tool to Anthropic")
        converted: dict[str, Any] = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            converted["description"] = function["description"]
        out.append(converted)
    return out


def _openai_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    converted: dict[str, Any] | None
    if choice is None:
        converted = None
    elif choice == "auto":
        converted = {"type": "auto"}
    elif choice == "none":
        converted = {"type": "none"}
    elif choice == "required":
        converted = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        converted = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise InvalidInputError(f"cannot convert tool_choice {choice!r:.60} to Anthropic")
    if parallel is False:
        converted = {**(converted or {"type": "auto"}), "disable_parallel_tool_use": True}
    return converted


def openai_to_anthropic(request: OpenAIChatRequest, *, default_max_tokens: int) -> dict[str, Any]:
    """An Anthropic messages body asking what the OpenAI ``request`` asks.

    ``default_max_tokens`` stands in when the request sets no cap: Anthropic requires one.
    """
    extra = request.extra
    choice = extra.pop("tool_choice", None)
    parallel = extra.pop("parallel_tool_calls", None)
    stop = extra.pop("stop", None)
    top_p = extra.pop("top_p", None)
    user = extra.pop("user", None)
    if request.response_format is not None:
        extra["response_format"] = request.response_format
    _refuse("from OpenAI's shape to Anthropic's", _unconvertible(extra, _OPENAI_DROPPED))

    system, messages = _openai_messages(request.messages)
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if system is not None:
        body["system"] = system
    body["max_tokens"] = request.token_cap or default_max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if top_p is not None:
        body["top_p"] = top_p
    if stop is not None:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if request.tools:
        body["tools"] = _openai_tools(request.tools)
    tool_choice = _openai_tool_choice(choice, parallel)
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if isinstance(user, str):
        body["metadata"] = {"user_id": user}
    if request.stream:
        body["stream"] = True
    return body


# ---------------------------------------------------------------- Anthropic → OpenAI


def _block_to_openai_part(block: dict[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif source.get("type") == "url":
            url = str(source.get("url"))
        else:
            raise InvalidInputError(f"cannot convert an image of source {source.get('type')!r}")
        return {"type": "image_url", "image_url": {"url": url}}
    raise InvalidInputError(f"cannot convert a {kind!r} content block to OpenAI's shape")


def _anthropic_user(content: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    if not isinstance(content, list):
        raise InvalidInputError(f"message content must be text or blocks, not {content!r:.60}")
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            # OpenAI carries each tool result as a message of its own, right after the
            # assistant's call; Anthropic puts them first in the next user turn.
            text = _plain_text(block.get("content"), "a tool_result")
            if block.get("is_error"):
                text = f"[tool error] {text}"
            out.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
            )
        elif isinstance(block, dict):
            parts.append(_block_to_openai_part(block))
        else:
            raise InvalidInputError("a content block must be an object")
    if parts:
        out.append({"role": "user", "content": parts})


def _anthropic_assistant(content: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": "assistant", "content": content})
        return
    if not isinstance(content, list):
        raise InvalidInputError(f"message content must be text or blocks, not {content!r:.60}")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": json.dumps(block.get("input", {}), separators=(",", ":")),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier reasoning: OpenAI's shape has no place for it
        else:
            raise InvalidInputError(f"cannot convert an assistant {kind!r} block to OpenAI")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    out.append(message)


def _anthropic_tool_choice(choice: Any) -> tuple[Any, bool | None]:
    if choice is None:
        return None, None
    if not isinstance(choice, dict):
        raise InvalidInputError(f"tool_choice must be an object, not {choice!r:.60}")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kinds: dict[str, Callable[[], Any]] = {
        "auto": lambda: "auto",
        "any": lambda: "required",
        "none": lambda: "none",
        "tool": lambda: {"type": "function", "function": {"name": choice.get("name")}},
    }
    make = kinds.get(str(choice.get("type")))
    if make is None:
        raise InvalidInputError(f"cannot convert tool_choice {choice!r:.60} to OpenAI")
    return make(), parallel


def anthropic_to_openai(request: AnthropicChatRequest) -> dict[str, Any]:
    """An OpenAI chat completions body asking what the Anthropic ``request`` asks."""
    extra = request.extra
    choice = extra.pop("tool_choice", None)
    stop = extra.pop("stop_sequences", None)
    top_p = extra.pop("top_p", None)
    metadata = extra.pop("metadata", None)
    _refuse("from Anthropic's shape to OpenAI's", _unconvertible(extra, _ANTHROPIC_DROPPED))

    messages: list[dict[str, Any]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": _plain_text(request.system, "system")})
    for i, message in enumerate(request.messages):
        role = message.get("role")
        if role == "user":
            _anthropic_user(message.get("content"), messages)
        elif role == "assistant":
            _anthropic_assistant(message.get("content"), messages)
        else:
            raise InvalidInputError(f"messages[{i}]: cannot convert a {role!r} message")
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if top_p is not None:
        body["top_p"] = top_p
    if stop:
        body["stop"] = list(stop)
    if request.tools:
        tools = []
        for tool in request.tools:
            if tool.get("type") not in (None, "custom"):
                raise InvalidInputError(
                    f"cannot convert Anthropic's server tool {tool.get('type')!r} to OpenAI"
                )
            function: dict[str, Any] = {
                "name": tool.get("name"),
                "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
            }
            if tool.get("description"):
                function["description"] = tool["description"]
            tools.append({"type": "function", "function": function})
        body["tools"] = tools
    tool_choice, parallel = _anthropic_tool_choice(choice)
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        body["user"] = metadata["user_id"]
    if request.stream:
        body["stream"] = True
    return body
