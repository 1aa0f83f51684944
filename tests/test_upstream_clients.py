"""The official ``openai`` and ``anthropic`` clients read the fake upstream's answers —
plain, streamed, tool calls, errors — and the official types accept the bodies and events
Warden writes when it converts between the two shapes. Skipped where a client is not
installed."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from pydantic import TypeAdapter

from warden.testing import FakeReply, FakeUpstream
from warden.upstream import (
    AnthropicChatRequest,
    AnthropicUpstream,
    OpenAIChatRequest,
    OpenAIUpstream,
    ToolCall,
    Usage,
)

KEY = "sk-client-test"
HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def served() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def fake(served: FakeUpstream) -> FakeUpstream:
    served.reset()
    return served


@pytest.fixture
def openai() -> ModuleType:
    module: ModuleType = pytest.importorskip("openai")
    return module


@pytest.fixture
def anthropic() -> ModuleType:
    module: ModuleType = pytest.importorskip("anthropic")
    return module


# ---------------------------------------------------------------- openai client


async def test_openai_client_reads_a_completion(fake: FakeUpstream, openai: ModuleType) -> None:
    fake.push(FakeReply("Hello!", usage=Usage(10, 2, cache_read_tokens=3)))
    async with openai.AsyncOpenAI(base_url=fake.openai_url, api_key=KEY, max_retries=0) as client:
        completion = await client.chat.completions.create(model="gpt-test", messages=HELLO)
    assert completion.choices[0].message.content == "Hello!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 10
    assert completion.usage.prompt_tokens_details.cached_tokens == 3


async def test_openai_client_reads_tool_calls(fake: FakeUpstream, openai: ModuleType) -> None:
    fake.push(FakeReply("", tool_calls=[ToolCall.of("refund", {"order": "A1"}, id="call_1")]))
    async with openai.AsyncOpenAI(base_url=fake.openai_url, api_key=KEY, max_retries=0) as client:
        completion = await client.chat.completions.create(model="m", messages=HELLO)
    (call,) = completion.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1",
        "refund",
        '{"order":"A1"}',
    )


async def test_openai_client_reads_a_stream_with_usage(
    fake: FakeUpstream, openai: ModuleType
) -> None:
    fake.push(FakeReply("Streaming to a real client", usage=Usage(7, 6), chunk_chars=4))
    async with openai.AsyncOpenAI(base_url=fake.openai_url, api_key=KEY, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="m", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streaming to a real client"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


async def test_openai_stream_helper_assembles_tool_calls(
    fake: FakeUpstream, openai: ModuleType
) -> None:
    call = ToolCall.of("lookup", {"q": "cats"}, id="call_9")
    fake.push(FakeReply("", tool_calls=[call], chunk_chars=3))
    async with openai.AsyncOpenAI(base_url=fake.openai_url, api_key=KEY, max_retries=0) as client:
        async with client.chat.completions.stream(model="m", messages=HELLO) as stream:
            final = await stream.get_final_completion()
    (made,) = final.choices[0].message.tool_calls
    assert (made.function.name, made.function.arguments) == ("lookup", '{"q":"cats"}')


async def test_openai_client_sees_rate_limits(fake: FakeUpstream, openai: ModuleType) -> None:
    fake.push(FakeReply.failure(429, retry_after=1))
    async with openai.AsyncOpenAI(base_url=fake.openai_url, api_key=KEY, max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="m", messages=HELLO)
    assert caught.value.code == "rate_limit_exceeded"


async def test_openai_client_key_is_checked(fake: FakeUpstream, openai: ModuleType) -> None:
    async with openai.AsyncOpenAI(base_url=fake.openai_url, api_key="wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            await c.chat.completions.create(model="m", messages=HELLO)


# ---------------------------------------------------------------- anthropic client


def anthropic_client(anthropic: ModuleType, fake: FakeUpstream, key: str = KEY) -> Any:
    return anthropic.AsyncAnthropic(base_url=fake.anthropic_url, api_key=key, max_retries=0)


async def test_anthropic_client_reads_a_message(fake: FakeUpstream, anthropic: ModuleType) -> None:
    fake.push(FakeReply("Bonjour", usage=Usage(40, 3, cache_read_tokens=30, cache_write_tokens=5)))
    async with anthropic_client(anthropic, fake) as client:
        message = await client.messages.create(model="claude-test", max_tokens=50, messages=HELLO)
    assert message.content[0].text == "Bonjour"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (5, 30)


async def test_anthropic_stream_helper_reads_text_tools_and_usage(
    fake: FakeUpstream, anthropic: ModuleType
) -> None:
    call = ToolCall.of("lookup", {"order": "A1"}, id="toolu_1")
    fake.push(FakeReply("Let me check.", tool_calls=[call], usage=Usage(12, 9), chunk_chars=3))
    async with (
        anthropic_client(anthropic, fake) as client,
        client.messages.stream(model="c", max_tokens=50, messages=HELLO) as stream,
    ):
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Let me check."
    assert final.content[1].input == {"order": "A1"}
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 9)


async def test_anthropic_client_sees_overload(fake: FakeUpstream, anthropic: ModuleType) -> None:
    fake.push(FakeReply.failure(529))
    async with anthropic_client(anthropic, fake) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model="c", max_tokens=5, messages=HELLO)
    assert caught.value.status_code == 529


async def test_anthropic_client_key_is_checked(fake: FakeUpstream, anthropic: ModuleType) -> None:
    async with anthropic_client(anthropic, fake, key="wrong") as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model="c", max_tokens=5, messages=HELLO)


# ---------------------------------------------------------------- Warden's conversions


async def test_openai_types_accept_what_warden_converts_from_anthropic(
    fake: FakeUpstream, openai: ModuleType
) -> None:
    ChatCompletion = openai.types.chat.ChatCompletion
    ChatCompletionChunk = openai.types.chat.ChatCompletionChunk
    call = ToolCall.of("f", {"a": 1}, id="toolu_2")
    fake.push(FakeReply("Hi", tool_calls=[call]), FakeReply("Hi", tool_calls=[call]))
    async with AnthropicUpstream(fake.anthropic_url, KEY) as up:
        reply = await up.chat(OpenAIChatRequest(model="c", messages=HELLO))
        request = OpenAIChatRequest.parse(
            {
                "model": "c",
                "messages": HELLO,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
        async with up.stream(request) as stream:
            events = [e async for e in stream]
    completion = ChatCompletion.model_validate(reply.body)
    assert completion.choices[0].message.tool_calls[0].function.arguments == '{"a":1}'
    chunks = [ChatCompletionChunk.model_validate(e.json()) for e in events if e.data != "[DONE]"]
    assert chunks[-1].usage is not None
    ChatCompletion.model_validate(stream.reply().body)


async def test_anthropic_types_accept_what_warden_converts_from_openai(
    fake: FakeUpstream, anthropic: ModuleType
) -> None:
    Message = anthropic.types.Message
    call = ToolCall.of("f", {"a": 1}, id="call_2")
    fake.push(FakeReply("Hi", tool_calls=[call]), FakeReply("Hi", tool_calls=[call]))
    request = AnthropicChatRequest(model="m", messages=HELLO, max_tokens=9)
    async with OpenAIUpstream(fake.openai_url, KEY) as up:
        reply = await up.chat(request)
        async with up.stream(request.model_copy(update={"stream": True})) as stream:
            events = [e async for e in stream]
    message = Message.model_validate(reply.body)
    assert message.content[1].input == {"a": 1}
    adapter: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)
    parsed = [adapter.validate_python(e.json()) for e in events]
    assert reply.usage is not None
    assert parsed[-2].usage.output_tokens == reply.usage.output_tokens
    Message.model_validate(stream.reply().body)
