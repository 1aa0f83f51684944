"""The fake model upstream itself, spoken to with plain HTTP: routes, scripting, recorded
requests, credentials, error shapes and the usage option of streams."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from warden.errors import UsageError
from warden.testing import FakeReply, FakeRequest, FakeUpstream
from warden.upstream import ToolCall, Usage

HELLO = [{"role": "user", "content": "x" * 40}]
CLAUDE_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "k"}


@pytest.fixture(scope="module")
def served() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(served: FakeUpstream) -> FakeUpstream:
    served.reset()
    return served


def post_openai(fake: FakeUpstream, body: dict[str, object], key: str = "k") -> httpx.Response:
    return httpx.post(
        fake.openai_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )


def sse_data(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


def test_replies_come_from_the_queue_then_the_default(fake: FakeUpstream) -> None:
    fake.push("first", FakeReply("second"))
    texts = [
        post_openai(fake, {"model": "m", "messages": HELLO}).json()["choices"][0]["message"][
            "content"
        ]
        for _ in range(3)
    ]
    assert texts == ["first", "second", "ok"]


def test_a_script_function_sees_the_request() -> None:
    def echo(request: FakeRequest) -> str:
        return f"{request.wire}:{request.model}:{request.credential}"

    with FakeUpstream(echo) as fake:
        answer = httpx.post(
            fake.anthropic_url + "/v1/messages",
            json={"model": "claude", "max_tokens": 5, "messages": HELLO},
            headers=CLAUDE_HEADERS,
        ).json()
    assert answer["content"] == [{"type": "text", "text": "anthropic:claude:k"}]


def test_requests_are_recorded_with_their_headers(fake: FakeUpstream) -> None:
    post_openai(fake, {"model": "m", "messages": HELLO}, key="warden-key")
    (seen,) = fake.requests
    assert seen.wire == "openai" and seen.path == "/v1/chat/completions"
    assert seen.credential == "warden-key"
    assert seen.body == {"model": "m", "messages": HELLO}


def test_auto_usage_is_about_a_token_per_four_characters(fake: FakeUpstream) -> None:
    fake.push("y" * 20)
    usage = post_openai(fake, {"model": "m", "messages": HELLO}).json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (11, 5)  # 44 and 20 chars


def test_given_usage_and_none(fake: FakeUpstream) -> None:
    fake.push(FakeReply(usage=Usage(3, 4, cache_read_tokens=1)), FakeReply(usage=None))
    first = post_openai(fake, {"model": "m", "messages": HELLO}).json()
    second = post_openai(fake, {"model": "m", "messages": HELLO}).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 1
    assert "usage" not in second


def test_the_openai_stream_reports_usage_only_when_asked(fake: FakeUpstream) -> None:
    body = {"model": "m", "messages": HELLO, "stream": True}
    plain = [json.loads(d) for d in sse_data(post_openai(fake, body))[:-1]]
    assert all("usage" not in chunk and chunk["choices"] for chunk in plain)
    asked = sse_data(post_openai(fake, {**body, "stream_options": {"include_usage": True}}))
    assert asked[-1] == "[DONE]"
    chunks = [json.loads(d) for d in asked[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_tool_call_arguments_stream_in_pieces(fake: FakeUpstream) -> None:
    fake.push(FakeReply("", tool_calls=[ToolCall.of("f", {"k": "value"}, id="c")], chunk_chars=4))
    chunks = [
        json.loads(d)
        for d in sse_data(post_openai(fake, {"model": "m", "messages": HELLO, "stream": True}))[:-1]
    ]
    calls = [c["choices"][0]["delta"].get("tool_calls") for c in chunks]
    pieces = [call[0]["function"]["arguments"] for call in calls if call]
    assert pieces[0] == "" and "".join(pieces) == '{"k":"value"}' and len(pieces) > 2
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_only_its_key_is_accepted_when_it_has_one() -> None:
    with FakeUpstream(api_key="right") as fake:
        wrong = post_openai(fake, {"model": "m", "messages": HELLO}, key="wrong")
        claude = httpx.post(
            fake.anthropic_url + "/v1/messages",
            json={"model": "c", "max_tokens": 5, "messages": HELLO},
            headers={"anthropic-version": "2023-06-01", "x-api-key": "wrong"},
        )
        right = post_openai(fake, {"model": "m", "messages": HELLO}, key="right")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert claude.status_code == 401
    assert claude.json()["error"]["type"] == "authentication_error"
    assert right.status_code == 200


def test_what_the_real_apis_refuse_is_refused(fake: FakeUpstream) -> None:
    no_version = httpx.post(
        fake.anthropic_url + "/v1/messages",
        json={"model": "c", "max_tokens": 5, "messages": HELLO},
        headers={"x-api-key": "k"},
    )
    no_max = httpx.post(
        fake.anthropic_url + "/v1/messages",
        json={"model": "c", "messages": HELLO},
        headers=CLAUDE_HEADERS,
    )
    system_role = httpx.post(
        fake.anthropic_url + "/v1/messages",
        json={"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
        headers=CLAUDE_HEADERS,
    )
    options_without_stream = post_openai(
        fake, {"model": "m", "messages": HELLO, "stream_options": {"include_usage": True}}
    )
    unknown = httpx.post(fake.url + "/v1/embeddings", json={})
    assert [r.status_code for r in (no_version, no_max, system_role, options_without_stream)] == [
        400
    ] * 4
    assert no_max.json()["error"]["type"] == "invalid_request_error"
    assert unknown.status_code == 404


def test_error_replies_use_each_kinds_shape_and_headers(fake: FakeUpstream) -> None:
    fake.push(
        FakeReply.failure(429, retry_after=2),
        FakeReply.failure(529),
        FakeReply(status=502, error="<html>bad gateway</html>"),
    )
    limited = post_openai(fake, {"model": "m", "messages": HELLO})
    overloaded = httpx.post(
        fake.anthropic_url + "/v1/messages",
        json={"model": "c", "max_tokens": 5, "messages": HELLO},
        headers=CLAUDE_HEADERS,
    )
    gateway = post_openai(fake, {"model": "m", "messages": HELLO})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert limited.json()["error"]["type"] == "requests"
    assert overloaded.status_code == 529
    assert overloaded.json()["error"]["type"] == "overloaded_error"
    assert gateway.status_code == 502 and gateway.text == "<html>bad gateway</html>"


def test_a_cut_stream_ends_without_its_closing_events(fake: FakeUpstream) -> None:
    fake.push(FakeReply("abcdefgh", chunk_chars=1, cut_after=3))
    with pytest.raises(httpx.RemoteProtocolError):
        post_openai(fake, {"model": "m", "messages": HELLO, "stream": True})


def test_an_anthropic_error_event_ends_the_stream(fake: FakeUpstream) -> None:
    fake.push(FakeReply("abc", error_event_after=1))
    response = httpx.post(
        fake.anthropic_url + "/v1/messages",
        json={"model": "c", "max_tokens": 5, "messages": HELLO, "stream": True},
        headers=CLAUDE_HEADERS,
    )
    events = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert events == ["message_start", "error"]
    assert json.loads(sse_data(response)[-1])["error"]["type"] == "overloaded_error"


def test_a_broken_script_answers_500_with_the_reason() -> None:
    def broken(request: FakeRequest) -> str:
        raise ValueError("no reply scripted for this")

    with FakeUpstream(broken) as fake:
        response = post_openai(fake, {"model": "m", "messages": HELLO})
    assert response.status_code == 500 and "no reply scripted for this" in response.text


def test_url_needs_a_running_fake() -> None:
    fake = FakeUpstream()
    with pytest.raises(UsageError, match="not running"):
        _ = fake.url
    fake.stop()  # stopping a fake that never ran is harmless


async def test_usable_as_an_async_context_manager() -> None:
    async with FakeUpstream(default="async") as fake, httpx.AsyncClient() as client:
        response = await client.post(
            fake.openai_url + "/chat/completions", json={"model": "m", "messages": HELLO}
        )
    assert response.json()["choices"][0]["message"]["content"] == "async"
