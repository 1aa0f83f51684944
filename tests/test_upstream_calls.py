"""Model upstreams against the fake upstream on loopback (real HTTP): plain and streamed
calls on both kinds, usage read from replies and streams, credentials, conversion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from warden.testing import FakeReply, FakeUpstream
from warden.upstream import (
    AnthropicChatRequest,
    AnthropicUpstream,
    ChatStream,
    OpenAIChatRequest,
    OpenAIUpstream,
    StreamEvent,
    ToolCall,
    Upstream,
    UpstreamStatusError,
    Usage,
    new_client,
)

KEY = "sk-warden-upstream-secret-0123456789"
HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def served() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(served: FakeUpstream) -> FakeUpstream:
    served.reset()
    return served


def openai(fake: FakeUpstream, **options: Any) -> OpenAIUpstream:
    return OpenAIUpstream(fake.openai_url, KEY, name="oai", **options)


def anthropic(fake: FakeUpstream, **options: Any) -> AnthropicUpstream:
    return AnthropicUpstream(fake.anthropic_url, KEY, name="ant", **options)


async def drain(stream: ChatStream) -> list[StreamEvent]:
    return [event async for event in stream]


def payloads(events: list[StreamEvent]) -> list[dict[str, Any]]:
    return [e.json() for e in events if e.data != "[DONE]"]


# ---------------------------------------------------------------- OpenAI-compatible


async def test_openai_call_returns_the_upstream_body_and_its_usage(fake: FakeUpstream) -> None:
    fake.push(FakeReply("Hello!", usage=Usage(12, 3, cache_read_tokens=4)))
    async with openai(fake) as up:
        reply = await up.chat(OpenAIChatRequest(model="gpt-test", messages=HELLO))
    assert reply.text == "Hello!"
    assert reply.usage == Usage(12, 3, cache_read_tokens=4)
    assert reply.finish_reason == "stop"
    assert reply.model == "gpt-test"
    assert reply.body is reply.raw
    assert reply.body["object"] == "chat.completion"
    assert (reply.route.upstream, reply.route.model, reply.route.attempts) == ("oai", "gpt-test", 1)


async def test_openai_body_passes_through_and_the_credential_is_a_bearer(
    fake: FakeUpstream,
) -> None:
    body = {
        "model": "alias",
        "messages": HELLO,
        "temperature": 0,
        "seed": 7,
        "tool_choice": "none",
        "user": None,
    }
    async with openai(fake, headers={"x-team": "risk"}) as up:
        await up.chat(OpenAIChatRequest.parse(body), model="gpt-real")
    sent = fake.requests[-1]
    assert sent.body == {**body, "model": "gpt-real"}
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-team"] == "risk"
    assert "x-api-key" not in sent.headers


async def test_openai_tool_calls_are_read(fake: FakeUpstream) -> None:
    call = ToolCall.of("refund", {"order": "A1", "amount": 5}, id="call_1")
    fake.push(FakeReply("", tool_calls=[call]))
    async with openai(fake) as up:
        reply = await up.chat(OpenAIChatRequest(model="m", messages=HELLO))
    assert reply.tool_calls == (call,)
    assert reply.finish_reason == "tool_calls"
    assert reply.tool_calls[0].parsed() == {"order": "A1", "amount": 5}


async def test_openai_stream_passes_events_through_and_reads_the_usage_chunk(
    fake: FakeUpstream,
) -> None:
    fake.push(FakeReply("Hello there, friend", usage=Usage(9, 5), chunk_chars=5))
    request = OpenAIChatRequest.parse(
        {"model": "m", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    )
    async with openai(fake) as up, up.stream(request) as stream:
        events = await drain(stream)
    assert events[-1].data == "[DONE]"
    chunks = payloads(events)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == (
        "Hello there, friend"
    )
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 9
    assert stream.usage == Usage(9, 5)
    assert stream.text == "Hello there, friend"
    assert stream.complete
    assert stream.error is None


async def test_openai_stream_asks_for_usage_but_hides_it_from_a_client_that_did_not(
    fake: FakeUpstream,
) -> None:
    fake.push(FakeReply("Hi", usage=Usage(7, 2)))
    request = OpenAIChatRequest(model="m", messages=HELLO, stream=True)
    async with openai(fake) as up, up.stream(request) as stream:
        events = await drain(stream)
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(c["choices"] for c in payloads(events))
    assert stream.usage == Usage(7, 2)


async def test_openai_stream_without_usage_is_unknown_not_zero(fake: FakeUpstream) -> None:
    fake.push(FakeReply("Hi", omit_usage=True))
    request = OpenAIChatRequest(model="m", messages=HELLO, stream=True)
    async with openai(fake) as up, up.stream(request) as stream:
        await drain(stream)
    assert stream.complete
    assert stream.usage is None
    assert stream.reply().usage is None


async def test_openai_stream_usage_option_can_be_turned_off(fake: FakeUpstream) -> None:
    request = OpenAIChatRequest(model="m", messages=HELLO, stream=True)
    async with openai(fake, stream_usage=False) as up, up.stream(request) as stream:
        await drain(stream)
    assert "stream_options" not in fake.requests[-1].body
    assert stream.usage is None


async def test_openai_streamed_tool_calls_are_assembled(fake: FakeUpstream) -> None:
    calls = [ToolCall.of("a", {"x": 1}, id="c1"), ToolCall.of("b", {"y": "two"}, id="c2")]
    fake.push(FakeReply("", tool_calls=calls, chunk_chars=3))
    request = OpenAIChatRequest(model="m", messages=HELLO, stream=True)
    async with openai(fake) as up, up.stream(request) as stream:
        await drain(stream)
    assert stream.tool_calls == tuple(calls)
    assert stream.finish_reason == "tool_calls"


async def test_plain_call_drops_stream_flags(fake: FakeUpstream) -> None:
    request = OpenAIChatRequest.parse(
        {"model": "m", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    )
    async with openai(fake) as up:
        await up.chat(request)
    assert "stream" not in fake.requests[-1].body
    assert "stream_options" not in fake.requests[-1].body


async def test_azure_style_auth_and_query(fake: FakeUpstream) -> None:
    async with openai(fake, auth="api-key", query={"api-version": "2024-10-21"}) as up:
        await up.chat(OpenAIChatRequest(model="m", messages=HELLO))
    sent = fake.requests[-1]
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers


async def test_no_credential_sends_no_auth_header(fake: FakeUpstream) -> None:
    async with OpenAIUpstream(fake.openai_url) as up:
        await up.chat(OpenAIChatRequest(model="llama3", messages=HELLO))
    assert "authorization" not in fake.requests[-1].headers


async def test_the_credential_can_be_a_function_called_per_request(fake: FakeUpstream) -> None:
    keys = iter(["k1", "k2"])
    async with OpenAIUpstream(fake.openai_url, lambda: next(keys)) as up:
        await up.chat(OpenAIChatRequest(model="m", messages=HELLO))
        await up.chat(OpenAIChatRequest(model="m", messages=HELLO))
    assert [r.credential for r in fake.requests] == ["k1", "k2"]


# ---------------------------------------------------------------- Anthropic


async def test_anthropic_call_reads_usage_with_cache_counts(fake: FakeUpstream) -> None:
    usage = Usage(100, 20, cache_read_tokens=60, cache_write_tokens=10)
    fake.push(FakeReply("Bonjour", usage=usage))
    request = AnthropicChatRequest(model="claude-test", messages=HELLO, max_tokens=64)
    async with anthropic(fake) as up:
        reply = await up.chat(request)
    assert reply.text == "Bonjour"
    assert reply.usage == usage
    assert reply.raw["usage"]["input_tokens"] == 30  # Anthropic's count excludes the cache
    assert reply.finish_reason == "stop"
    assert reply.body["type"] == "message"


async def test_anthropic_credential_and_version_headers(fake: FakeUpstream) -> None:
    request = AnthropicChatRequest(model="c", messages=HELLO, max_tokens=10, system="Be brief")
    async with anthropic(fake, version="2023-06-01") as up:
        await up.chat(request)
    sent = fake.requests[-1]
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.body == {"model": "c", "messages": HELLO, "max_tokens": 10, "system": "Be brief"}


async def test_anthropic_stream_passes_real_event_names_and_reads_usage(
    fake: FakeUpstream,
) -> None:
    fake.push(FakeReply("Streaming works", usage=Usage(11, 4), chunk_chars=4))
    request = AnthropicChatRequest(model="c", messages=HELLO, max_tokens=50, stream=True)
    async with anthropic(fake) as up, up.stream(request) as stream:
        events = await drain(stream)
    names = [e.event for e in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert {"content_block_start", "content_block_delta", "content_block_stop", "ping"} <= set(
        names
    )
    assert all(e.json()["type"] == e.event for e in events)
    assert stream.usage == Usage(11, 4)
    assert stream.text == "Streaming works"
    assert stream.complete


async def test_anthropic_stream_without_usage_is_unknown(fake: FakeUpstream) -> None:
    fake.push(FakeReply("x", omit_usage=True))
    request = AnthropicChatRequest(model="c", messages=HELLO, max_tokens=5, stream=True)
    async with anthropic(fake) as up, up.stream(request) as stream:
        await drain(stream)
    assert stream.usage is None


async def test_anthropic_streamed_tool_use_is_assembled(fake: FakeUpstream) -> None:
    call = ToolCall.of("lookup", {"order": "A1"}, id="toolu_1")
    fake.push(FakeReply("Checking.", tool_calls=[call], chunk_chars=4))
    request = AnthropicChatRequest(model="c", messages=HELLO, max_tokens=50, stream=True)
    async with anthropic(fake) as up, up.stream(request) as stream:
        await drain(stream)
    assert stream.text == "Checking."
    assert stream.tool_calls == (call,)
    assert stream.finish_reason == "tool_calls"


async def test_anthropic_request_without_max_tokens_gets_the_default(fake: FakeUpstream) -> None:
    async with anthropic(fake, default_max_tokens=321) as up:
        await up.chat(AnthropicChatRequest(model="c", messages=HELLO))
    assert fake.requests[-1].body["max_tokens"] == 321


# ---------------------------------------------------------------- across shapes


async def test_openai_request_to_anthropic_upstream_and_back(fake: FakeUpstream) -> None:
    fake.push(FakeReply("Converted", usage=Usage(30, 6, cache_read_tokens=10)))
    request = OpenAIChatRequest.parse(
        {
            "model": "fast",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
            ],
            "max_tokens": 77,
            "temperature": 0.2,
            "stop": "END",
        }
    )
    async with anthropic(fake) as up:
        reply = await up.chat(request, model="claude-real")
    sent = fake.requests[-1].body
    assert sent == {
        "model": "claude-real",
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "You are terse.",
        "max_tokens": 77,
        "temperature": 0.2,
        "stop_sequences": ["END"],
    }
    assert reply.wire == "openai"
    assert reply.body["object"] == "chat.completion"
    assert reply.body["choices"][0]["message"]["content"] == "Converted"
    assert reply.body["choices"][0]["finish_reason"] == "stop"
    assert reply.body["usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 6,
        "total_tokens": 36,
        "prompt_tokens_details": {"cached_tokens": 10},
    }
    assert reply.raw["type"] == "message"
    assert reply.usage == Usage(30, 6, cache_read_tokens=10)


async def test_anthropic_request_to_openai_upstream_and_back(fake: FakeUpstream) -> None:
    fake.push(FakeReply("Sure", usage=Usage(8, 2)))
    request = AnthropicChatRequest(model="big", system="Rules.", messages=HELLO, max_tokens=9)
    async with openai(fake) as up:
        reply = await up.chat(request, model="gpt-real")
    assert fake.requests[-1].body == {
        "model": "gpt-real",
        "messages": [{"role": "system", "content": "Rules."}, *HELLO],
        "max_tokens": 9,
    }
    assert reply.body["type"] == "message"
    assert reply.body["content"] == [{"type": "text", "text": "Sure"}]
    assert reply.body["stop_reason"] == "end_turn"
    assert reply.body["usage"]["input_tokens"] == 8


async def test_anthropic_stream_converted_to_openai_chunks(fake: FakeUpstream) -> None:
    call = ToolCall.of("f", {"a": 1}, id="toolu_9")
    fake.push(FakeReply("Hey", tool_calls=[call], usage=Usage(5, 7), chunk_chars=2))
    request = OpenAIChatRequest.parse(
        {"model": "m", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    )
    async with anthropic(fake) as up, up.stream(request) as stream:
        events = await drain(stream)
    assert all(e.event is None for e in events)
    assert events[-1].data == "[DONE]"
    chunks = payloads(events)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hey"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens"] == 5
    assert stream.reply().body["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "f",
        "arguments": '{"a":1}',
    }
    assert stream.usage == Usage(5, 7)


async def test_openai_stream_converted_to_anthropic_events(fake: FakeUpstream) -> None:
    call = ToolCall.of("g", {"b": 2}, id="call_7")
    fake.push(FakeReply("Yo", tool_calls=[call], usage=Usage(6, 3), chunk_chars=1))
    request = AnthropicChatRequest(model="m", messages=HELLO, max_tokens=20, stream=True)
    async with openai(fake) as up, up.stream(request) as stream:
        events = await drain(stream)
    names = [e.event for e in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    delta = events[-2].json()
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 3 and delta["usage"]["input_tokens"] == 6
    pieces = [e.json()["delta"] for e in events if e.event == "content_block_delta"]
    arguments = "".join(p["partial_json"] for p in pieces if p["type"] == "input_json_delta")
    assert json.loads(arguments) == {"b": 2}
    assert stream.text == "Yo"


async def test_unconvertible_parameter_is_refused_before_any_request(fake: FakeUpstream) -> None:
    from warden.errors import InvalidInputError

    request = OpenAIChatRequest.parse(
        {"model": "m", "messages": HELLO, "n": 3, "response_format": {"type": "json_object"}}
    )
    async with anthropic(fake) as up:
        with pytest.raises(InvalidInputError, match="n, response_format"):
            await up.chat(request)
    assert fake.requests == []


# ---------------------------------------------------------------- shared client, secrets


async def test_upstreams_share_one_client_and_leave_it_open(fake: FakeUpstream) -> None:
    client = new_client()
    ups: list[Upstream] = [openai(fake, client=client), anthropic(fake, client=client)]
    for up in ups:
        async with up:
            await up.chat(OpenAIChatRequest(model="m", messages=HELLO))
    assert not client.is_closed
    await client.aclose()


async def test_the_credential_never_appears_in_an_error(fake: FakeUpstream) -> None:
    echo = {
        "error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}
    }
    fake.push(FakeReply.failure(401, error=echo))
    async with openai(fake) as up:
        with pytest.raises(UpstreamStatusError) as caught:
            await up.chat(OpenAIChatRequest(model="m", messages=HELLO))
    error = caught.value
    assert error.status == 401 and not error.retryable
    assert "Incorrect API key provided" in str(error)
    assert KEY not in str(error) and KEY not in repr(error.body) and KEY not in repr(error.args)
    assert KEY not in repr(up)


async def test_connection_errors_name_the_upstream_not_the_key() -> None:
    from warden.upstream import UpstreamConnectError

    async with OpenAIUpstream("http://127.0.0.1:9", KEY, max_retries=0) as up:
        with pytest.raises(UpstreamConnectError) as caught:
            await up.chat(OpenAIChatRequest(model="m", messages=HELLO))
    assert "127.0.0.1" in str(caught.value)
    assert KEY not in str(caught.value)


async def test_error_status_carries_the_upstreams_body(fake: FakeUpstream) -> None:
    fake.push(FakeReply.failure(400))
    async with anthropic(fake) as up:
        with pytest.raises(UpstreamStatusError) as caught:
            await up.chat(AnthropicChatRequest(model="c", messages=HELLO, max_tokens=5))
    assert caught.value.reason == "client_error"
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert len(fake.requests) == 1  # a refused request is not retried
