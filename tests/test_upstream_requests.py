"""Typed chat requests: validation, pass-through of what Warden does not type, token caps,
and a full conversation converted OpenAI → Anthropic → OpenAI through the fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import warden.testing
import warden.upstream
from warden.errors import InvalidInputError, UsageError, WardenError
from warden.testing import FakeUpstream
from warden.upstream import (
    AnthropicChatRequest,
    AnthropicUpstream,
    OpenAIChatRequest,
    OpenAIUpstream,
    StreamEvent,
    ToolCall,
    UpstreamError,
    parse_request,
)

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def served() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(served: FakeUpstream) -> FakeUpstream:
    served.reset()
    return served


def test_public_names_are_pinned() -> None:
    assert sorted(warden.upstream.__all__) == sorted(
        [
            "FALLBACK_REASONS",
            "AnthropicChatRequest",
            "AnthropicUpstream",
            "ChatReply",
            "ChatRequest",
            "ChatStream",
            "FallbackChain",
            "KeySource",
            "OpenAIChatRequest",
            "OpenAIUpstream",
            "Reason",
            "Route",
            "Skip",
            "StreamEvent",
            "Target",
            "ToolCall",
            "Upstream",
            "UpstreamCircuitOpen",
            "UpstreamConnectError",
            "UpstreamError",
            "UpstreamOptions",
            "UpstreamResponseError",
            "UpstreamStatusError",
            "UpstreamStreamInterrupted",
            "UpstreamTimeout",
            "UpstreamsExhausted",
            "Usage",
            "Wire",
            "new_client",
            "parse_request",
        ]
    )
    assert {"FakeReply", "FakeRequest", "FakeUpstream"} <= set(warden.testing.__all__)
    for name in warden.upstream.__all__:
        assert hasattr(warden.upstream, name)


def test_upstream_errors_share_warden_root() -> None:
    for name in warden.upstream.__all__:
        value = getattr(warden.upstream, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, UpstreamError) and issubclass(value, WardenError)


def test_body_round_trips_with_extras_and_explicit_nulls() -> None:
    body: dict[str, Any] = {
        "model": "m",
        "messages": HELLO,
        "temperature": 0.3,
        "logit_bias": {"42": -100},
        "metadata": None,
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    request = OpenAIChatRequest.parse(body)
    assert request.to_body() == body
    assert request.extra == {"logit_bias": {"42": -100}, "metadata": None}
    assert request.with_model("other").to_body() == {**body, "model": "other"}


def test_invalid_requests_name_every_problem() -> None:
    with pytest.raises(InvalidInputError) as caught:
        OpenAIChatRequest.parse({"messages": [], "temperature": "0.5", "max_tokens": 0})
    text = str(caught.value)
    assert "invalid openai chat request" in text
    assert "messages" in text and "temperature" in text and "max_tokens" in text


def test_strings_are_not_coerced_to_numbers() -> None:
    with pytest.raises(InvalidInputError, match="max_tokens"):
        AnthropicChatRequest.parse({"messages": HELLO, "max_tokens": "100"})


def test_token_cap_keeps_the_callers_field() -> None:
    modern = OpenAIChatRequest.parse({"messages": HELLO, "max_completion_tokens": 500})
    assert modern.token_cap == 500
    assert modern.with_token_cap(100).to_body() == {"messages": HELLO, "max_completion_tokens": 100}
    legacy = OpenAIChatRequest.parse({"messages": HELLO})
    assert legacy.token_cap is None
    assert legacy.with_token_cap(64).to_body() == {"messages": HELLO, "max_tokens": 64}
    claude = AnthropicChatRequest.parse({"messages": HELLO, "max_tokens": 900})
    assert claude.with_token_cap(10).token_cap == 10


def test_parse_request_picks_the_shape() -> None:
    assert isinstance(parse_request("anthropic", {"messages": HELLO}), AnthropicChatRequest)
    assert parse_request("openai", {"messages": HELLO}).wire == "openai"


def test_tool_call_arguments_that_are_not_json_are_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="'f': arguments are not valid JSON"):
        ToolCall("1", "f", "{oops").parsed()


def test_stream_event_encoding() -> None:
    assert StreamEvent('{"a":1}').encode() == b'data: {"a":1}\n\n'
    assert StreamEvent("x", "ping").encode() == b"event: ping\ndata: x\n\n"
    assert StreamEvent("one\ntwo").encode() == b"data: one\ndata: two\n\n"


def test_upstream_options_are_checked() -> None:
    with pytest.raises(UsageError, match="timeout must be positive"):
        OpenAIUpstream("http://127.0.0.1:1/v1", timeout=0)
    with pytest.raises(UsageError, match="base_url"):
        AnthropicUpstream("127.0.0.1:1")


async def test_a_model_is_required(fake: FakeUpstream) -> None:
    async with OpenAIUpstream(fake.openai_url) as up:
        with pytest.raises(UsageError, match="no model"):
            await up.chat(OpenAIChatRequest(messages=HELLO))
    assert fake.requests == []


CONVERSATION: dict[str, Any] = {
    "model": "alias",
    "messages": [
        {"role": "system", "content": "Be careful."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":"cat"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":"dog"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "tool", "tool_call_id": "call_2", "content": "no dog"},
        {"role": "assistant", "content": "It is a cat."},
        {"role": "user", "content": "Thanks"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Search",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "max_tokens": 100,
    "temperature": 0.5,
    "top_p": 0.9,
    "stop": ["X"],
    "user": "u-1",
}


async def test_conversation_round_trip_openai_anthropic_openai(fake: FakeUpstream) -> None:
    async with AnthropicUpstream(fake.anthropic_url) as to_claude:
        await to_claude.chat(OpenAIChatRequest.parse(CONVERSATION), model="claude")
    as_anthropic = fake.requests[-1].body
    assert as_anthropic["system"] == "Be careful.\n\nUse tools."
    assert [m["role"] for m in as_anthropic["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    user = as_anthropic["messages"][0]["content"]
    assert user[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert user[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }
    assert as_anthropic["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "lookup",
        "input": {"q": "cat"},
    }
    assert as_anthropic["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "no dog"},
    ]
    assert as_anthropic["tools"][0]["input_schema"]["properties"] == {"q": {"type": "string"}}
    assert as_anthropic["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert as_anthropic["metadata"] == {"user_id": "u-1"}
    assert as_anthropic["stop_sequences"] == ["X"]

    async with OpenAIUpstream(fake.openai_url) as to_gpt:
        await to_gpt.chat(AnthropicChatRequest.parse(as_anthropic), model="alias")
    back = fake.requests[-1].body
    original = CONVERSATION["messages"]
    assert back["messages"][0] == {"role": "system", "content": "Be careful.\n\nUse tools."}
    assert back["messages"][1:] == original[2:]
    assert {k: v for k, v in back.items() if k != "messages"} == {
        k: v for k, v in CONVERSATION.items() if k != "messages"
    }


async def test_anthropic_only_features_are_refused_for_openai(fake: FakeUpstream) -> None:
    request = AnthropicChatRequest.parse(
        {"messages": HELLO, "max_tokens": 5, "thinking": {"type": "enabled", "budget_tokens": 10}}
    )
    async with OpenAIUpstream(fake.openai_url) as up:
        with pytest.raises(InvalidInputError, match="no equivalent for thinking"):
            await up.chat(request, model="m")
    assert fake.requests == []
