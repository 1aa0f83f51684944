"""Retries, timeouts, circuit breakers and fallback chains of model upstreams, against the
fake upstream on loopback. Waits between retries go through an injected ``sleep`` that
records them, so the tests check what Warden chose to wait without waiting it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from warden.testing import FakeReply, FakeUpstream
from warden.upstream import (
    AnthropicChatRequest,
    AnthropicUpstream,
    FallbackChain,
    OpenAIChatRequest,
    OpenAIUpstream,
    Target,
    UpstreamCircuitOpen,
    UpstreamsExhausted,
    UpstreamStatusError,
    UpstreamStreamInterrupted,
    UpstreamTimeout,
    Usage,
)

KEY = "sk-resilience-key"
HELLO = [{"role": "user", "content": "hi"}]
PLAIN = OpenAIChatRequest(model="m", messages=HELLO)
STREAMED = OpenAIChatRequest(model="m", messages=HELLO, stream=True)


@pytest.fixture(scope="module")
def served() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(served: FakeUpstream) -> FakeUpstream:
    served.reset()
    return served


class Waits:
    """Stands in for ``asyncio.sleep``: remembers each wait and returns at once."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def upstream(fake: FakeUpstream, waits: Waits, **options: Any) -> OpenAIUpstream:
    return OpenAIUpstream(fake.openai_url, KEY, **{"name": "primary", "sleep": waits, **options})


# ---------------------------------------------------------------- retries


async def test_429_is_retried_after_the_wait_the_upstream_asked(fake: FakeUpstream) -> None:
    fake.push(FakeReply.failure(429, retry_after=1.5), "after the wait")
    waits = Waits()
    async with upstream(fake, waits) as up:
        reply = await up.chat(PLAIN)
    assert reply.text == "after the wait"
    assert reply.route.attempts == 2
    assert waits.seconds == [1.5]
    assert len(fake.requests) == 2


async def test_retry_after_in_milliseconds_is_honoured(fake: FakeUpstream) -> None:
    fake.push(FakeReply(status=429, headers={"retry-after-ms": "250"}), "ok")
    waits = Waits()
    async with upstream(fake, waits) as up:
        await up.chat(PLAIN)
    assert waits.seconds == [0.25]


async def test_a_retry_after_beyond_the_bound_fails_at_once(fake: FakeUpstream) -> None:
    fake.push(FakeReply.failure(429, retry_after=120), "never reached")
    waits = Waits()
    async with upstream(fake, waits, max_retry_after=10) as up:
        with pytest.raises(UpstreamStatusError) as caught:
            await up.chat(PLAIN)
    assert caught.value.reason == "rate_limited"
    assert caught.value.retry_after == 120
    assert caught.value.retryable and caught.value.falls_back
    assert waits.seconds == []
    assert len(fake.requests) == 1


async def test_503_is_retried_with_growing_backoff(fake: FakeUpstream) -> None:
    fake.push(FakeReply.failure(503), FakeReply.failure(503), "third time")
    waits = Waits()
    async with upstream(fake, waits, backoff=1.0, max_backoff=10) as up:
        reply = await up.chat(PLAIN)
    assert reply.route.attempts == 3
    first, second = waits.seconds
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0


async def test_retries_stop_at_the_limit(fake: FakeUpstream) -> None:
    fake.push(*[FakeReply.failure(500)] * 3)
    waits = Waits()
    async with upstream(fake, waits, max_retries=1) as up:
        with pytest.raises(UpstreamStatusError) as caught:
            await up.chat(PLAIN)
    assert caught.value.status == 500 and caught.value.attempts == 2
    assert len(fake.requests) == 2


async def test_the_upstreams_own_verdict_on_retrying_is_obeyed(fake: FakeUpstream) -> None:
    fake.push(FakeReply(status=503, headers={"x-should-retry": "false"}))
    async with upstream(fake, Waits()) as up:
        with pytest.raises(UpstreamStatusError):
            await up.chat(PLAIN)
    assert len(fake.requests) == 1


async def test_anthropic_overload_is_retried(fake: FakeUpstream) -> None:
    fake.push(FakeReply.failure(529), "ok")
    waits = Waits()
    async with AnthropicUpstream(fake.anthropic_url, KEY, sleep=waits) as up:
        reply = await up.chat(AnthropicChatRequest(model="c", messages=HELLO, max_tokens=5))
    assert reply.route.attempts == 2 and len(waits.seconds) == 1


# ---------------------------------------------------------------- streams


async def test_a_stream_refused_at_the_start_is_retried(fake: FakeUpstream) -> None:
    fake.push(FakeReply.failure(429, retry_after=0), FakeReply("streamed", usage=Usage(3, 2)))
    async with upstream(fake, Waits()) as up, up.stream(STREAMED) as stream:
        events = [e async for e in stream]
    assert stream.route.attempts == 2
    assert events[-1].data == "[DONE]"
    assert stream.usage == Usage(3, 2)


async def test_a_stream_cut_before_its_first_event_is_retried(fake: FakeUpstream) -> None:
    fake.push(FakeReply("lost", cut_after=0), FakeReply("second try"))
    async with upstream(fake, Waits()) as up, up.stream(STREAMED) as stream:
        [e async for e in stream]
    assert stream.text == "second try"
    assert stream.route.attempts == 2


async def test_an_error_event_before_the_first_byte_is_retried(fake: FakeUpstream) -> None:
    fake.push(FakeReply("overloaded", error_event_after=0), "fine")
    request = AnthropicChatRequest(model="c", messages=HELLO, max_tokens=5, stream=True)
    async with AnthropicUpstream(fake.anthropic_url, KEY, sleep=Waits()) as up:
        async with up.stream(request) as stream:
            [e async for e in stream]
    assert stream.text == "fine"
    assert stream.route.attempts == 2


async def test_a_stream_cut_after_its_first_event_is_not_retried(fake: FakeUpstream) -> None:
    fake.push(FakeReply("a long answer that breaks", chunk_chars=2, cut_after=4), "unused")
    received = []
    async with upstream(fake, Waits()) as up:
        stream = await up.open_stream(STREAMED)
        with pytest.raises(UpstreamStreamInterrupted) as caught:
            async for event in stream:
                received.append(event)
    assert len(received) == 4
    assert len(fake.requests) == 1
    assert stream.usage is None and not stream.complete
    assert stream.error is caught.value
    assert "usage is unknown" in str(caught.value)
    assert not caught.value.falls_back


async def test_an_error_event_mid_stream_is_passed_on_and_recorded(fake: FakeUpstream) -> None:
    fake.push(FakeReply("abcdefgh", chunk_chars=2, error_event_after=3))
    request = AnthropicChatRequest(model="c", messages=HELLO, max_tokens=5, stream=True)
    async with AnthropicUpstream(fake.anthropic_url, KEY) as up, up.stream(request) as stream:
        events = [e async for e in stream]
    assert events[-1].event == "error"
    assert isinstance(stream.error, UpstreamStreamInterrupted)
    assert stream.usage is None


# ---------------------------------------------------------------- timeouts


async def test_a_slow_upstream_times_out(fake: FakeUpstream) -> None:
    fake.push(FakeReply("late", delay=5))
    async with upstream(fake, Waits(), timeout=0.2, max_retries=0) as up:
        with pytest.raises(UpstreamTimeout) as caught:
            await up.chat(PLAIN)
    assert caught.value.reason == "timeout" and caught.value.retryable


async def test_a_timeout_is_retried(fake: FakeUpstream) -> None:
    fake.push(FakeReply("late", delay=5), "quick")
    async with upstream(fake, Waits(), timeout=0.3) as up:
        reply = await up.chat(PLAIN)
    assert reply.text == "quick" and reply.route.attempts == 2


async def test_a_stream_whose_first_event_is_late_times_out(fake: FakeUpstream) -> None:
    fake.push(FakeReply("late", delay=5))
    async with upstream(fake, Waits(), timeout=0.2, max_retries=0) as up:
        with pytest.raises(UpstreamTimeout):
            await up.open_stream(STREAMED)


async def test_a_stream_that_falls_silent_is_interrupted(fake: FakeUpstream) -> None:
    fake.push(FakeReply("slow stream", chunk_chars=3, chunk_delay=5))
    async with upstream(fake, Waits(), timeout=0.3) as up:
        stream = await up.open_stream(STREAMED)
        with pytest.raises(UpstreamStreamInterrupted):
            [e async for e in stream]
    assert len(fake.requests) == 1


# ---------------------------------------------------------------- circuit breaker


async def test_the_circuit_opens_after_consecutive_failures(fake: FakeUpstream) -> None:
    fake.push(*[FakeReply.failure(503)] * 4)
    async with upstream(fake, Waits(), max_retries=0, failure_threshold=2) as up:
        for _ in range(2):
            with pytest.raises(UpstreamStatusError):
                await up.chat(PLAIN)
        with pytest.raises(UpstreamCircuitOpen) as caught:
            await up.chat(PLAIN)
    assert len(fake.requests) == 2  # the third call never left Warden
    assert caught.value.reason == "circuit_open" and caught.value.falls_back


async def test_refused_requests_do_not_open_the_circuit(fake: FakeUpstream) -> None:
    fake.push(*[FakeReply.failure(400)] * 3, "ok")
    async with upstream(fake, Waits(), failure_threshold=2) as up:
        for _ in range(3):
            with pytest.raises(UpstreamStatusError):
                await up.chat(PLAIN)
        assert (await up.chat(PLAIN)).text == "ok"


async def test_an_open_circuit_lets_a_probe_through_after_the_pause(fake: FakeUpstream) -> None:
    fake.push(FakeReply.failure(500), "recovered")
    async with upstream(fake, Waits(), max_retries=0, failure_threshold=1, reset_after=0.05) as up:
        with pytest.raises(UpstreamStatusError):
            await up.chat(PLAIN)
        with pytest.raises(UpstreamCircuitOpen):
            await up.chat(PLAIN)
        await asyncio.sleep(0.1)
        assert (await up.chat(PLAIN)).text == "recovered"


# ---------------------------------------------------------------- fallback chains


@pytest.fixture(scope="module")
def served_backup() -> Iterator[FakeUpstream]:
    with FakeUpstream(default="from the backup") as fake:
        yield fake


@pytest.fixture
def backup(served_backup: FakeUpstream) -> FakeUpstream:
    served_backup.reset()
    return served_backup


async def test_fallback_moves_on_after_a_server_error(
    fake: FakeUpstream, backup: FakeUpstream
) -> None:
    fake.push(FakeReply.failure(503))
    async with (
        upstream(fake, Waits(), max_retries=0) as first,
        AnthropicUpstream(backup.anthropic_url, KEY, name="backup") as second,
    ):
        chain = FallbackChain([Target(first, "gpt-big"), Target(second, "claude-big")])
        reply = await chain.chat(PLAIN)
    assert reply.text == "from the backup"
    assert (reply.route.upstream, reply.route.model) == ("backup", "claude-big")
    (skip,) = reply.route.skipped
    assert (skip.upstream, skip.model, skip.reason, skip.status) == (
        "primary",
        "gpt-big",
        "server_error",
        503,
    )
    assert reply.body["object"] == "chat.completion"  # the caller's shape, whoever answered
    assert backup.requests[-1].body["model"] == "claude-big"


async def test_fallback_skips_an_open_circuit_without_calling_it(
    fake: FakeUpstream, backup: FakeUpstream
) -> None:
    fake.push(FakeReply.failure(500))
    async with (
        upstream(fake, Waits(), max_retries=0, failure_threshold=1) as first,
        OpenAIUpstream(backup.openai_url, KEY, name="backup") as second,
    ):
        chain = FallbackChain([Target(first, "a"), Target(second, "b")])
        await chain.chat(PLAIN)
        reply = await chain.chat(PLAIN)
    assert len(fake.requests) == 1
    assert [s.reason for s in reply.route.skipped] == ["circuit_open"]


async def test_fallback_on_429_and_timeout(fake: FakeUpstream, backup: FakeUpstream) -> None:
    fake.push(FakeReply.failure(429, retry_after=600), FakeReply("late", delay=5))
    async with (
        upstream(fake, Waits(), max_retries=0, timeout=0.2, name="one") as one,
        upstream(fake, Waits(), max_retries=0, timeout=0.2, name="two") as two,
        OpenAIUpstream(backup.openai_url, KEY, name="three") as three,
    ):
        chain = FallbackChain([Target(one, "m1"), Target(two, "m2"), Target(three, "m3")])
        reply = await chain.chat(PLAIN)
    assert [(s.upstream, s.reason) for s in reply.route.skipped] == [
        ("one", "rate_limited"),
        ("two", "timeout"),
    ]
    assert reply.route.upstream == "three"


async def test_a_refused_request_does_not_fall_back(
    fake: FakeUpstream, backup: FakeUpstream
) -> None:
    fake.push(FakeReply.failure(400))
    async with (
        upstream(fake, Waits()) as first,
        OpenAIUpstream(backup.openai_url, KEY) as second,
    ):
        chain = FallbackChain([Target(first, "a"), Target(second, "b")])
        with pytest.raises(UpstreamStatusError) as caught:
            await chain.chat(PLAIN)
    assert caught.value.status == 400
    assert backup.requests == []


async def test_every_target_failing_says_why_each_did(fake: FakeUpstream) -> None:
    fake.push(FakeReply.failure(503), FakeReply.failure(429))
    async with (
        upstream(fake, Waits(), max_retries=0, name="x") as x,
        upstream(fake, Waits(), max_retries=0, max_retry_after=0, name="y") as y,
    ):
        with pytest.raises(UpstreamsExhausted) as caught:
            await FallbackChain([Target(x, "m"), Target(y, "m")]).chat(PLAIN)
    assert [(s.upstream, s.reason) for s in caught.value.skipped] == [
        ("x", "server_error"),
        ("y", "rate_limited"),
    ]
    assert caught.value.reason == "exhausted" and caught.value.retryable


async def test_a_streamed_call_falls_back_before_its_first_byte(
    fake: FakeUpstream, backup: FakeUpstream
) -> None:
    fake.push(FakeReply.failure(502))
    async with (
        upstream(fake, Waits(), max_retries=0) as first,
        OpenAIUpstream(backup.openai_url, KEY, name="backup") as second,
    ):
        chain = FallbackChain([Target(first, "a"), Target(second, "b")])
        async with chain.stream(STREAMED) as stream:
            [e async for e in stream]
    assert stream.text == "from the backup"
    assert stream.route.upstream == "backup"
    assert [s.reason for s in stream.route.skipped] == ["server_error"]
