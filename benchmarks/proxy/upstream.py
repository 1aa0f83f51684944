"""The benchmark's model upstream: a minimal, fast OpenAI-compatible chat completions server.

    python benchmarks/proxy/upstream.py --port 9100 [--workers 1] [--delay-ms 0]

Why not ``warden.testing.FakeUpstream``: it runs uvicorn in one thread of its own process
(one event loop), keeps every request it received (headers and body, for tests to read
back), and listens on a port the OS picks, so it cannot be given several workers. Measured
here in its own process (the calibration row, ``fake_launcher.py``) it keeps up with the
proxies' rates easily, but its p99 is 80-150 ms against 5-10 ms for this server, which
would swamp the "added p99" the benchmark is about. In front of two proxies on the same 2
cores the upstream must also cost as little CPU as possible. This server is an
``asyncio.Protocol`` on uvloop with httptools' parser (both come with
``uvicorn[standard]``): no ASGI, no framework, nothing kept between requests.

It answers ``POST /v1/chat/completions`` with the bodies ``FakeUpstream`` sends (the same
fields, copied from its ``_openai_body`` and ``_openai_events``): a ``chat.completion``
whose text is ``--reply``, with usage (about one token per four characters of the
request's messages, and of the reply), or, for ``"stream": true``, ``chat.completion.chunk``
events (role, the reply in pieces of ``--chunk-chars`` characters, finish) followed, when
the request asks with ``stream_options.include_usage``, by the usage chunk, then
``data: [DONE]``. ``--delay-ms`` waits before the answer starts (0: none);
``--random-output N`` reports a random 1..N output tokens, never more than the request's
``max_tokens`` (as a real upstream bills). Any other path is a 404. Several ``--workers``
share the port with ``SO_REUSEPORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import random
import signal
import socket
import time
from typing import Any

import httptools
import uvloop

PATH = b"/v1/chat/completions"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _texts(value: Any) -> int:
    """Characters of text in a request's messages (strings anywhere in them)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_texts(v) for v in value.values())
    if isinstance(value, list):
        return sum(_texts(v) for v in value)
    return 0


def _tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class Settings:
    reply = "ok"
    chunk_chars = 8
    delay = 0.0
    #: 0: usage says the reply's own length; N: a random 1..N output tokens, never more
    #: than the request's max_tokens (the budget race: calls that cost different amounts)
    random_output = 0
    rng = random.Random(9)


def _completion_tokens(body: dict[str, Any]) -> int:
    if not Settings.random_output:
        return _tokens(len(Settings.reply))
    cap = body.get("max_completion_tokens") or body.get("max_tokens") or Settings.random_output
    return Settings.rng.randint(1, max(1, min(Settings.random_output, int(cap))))


_ids = iter(range(1, 1 << 62))


def completion(body: dict[str, Any]) -> bytes:
    model = body.get("model") or "fake-model"
    usage = _usage(_tokens(_texts(body.get("messages"))), _completion_tokens(body))
    return _dumps(
        {
            "id": f"chatcmpl-fake{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": Settings.reply,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": None,
        }
    )


def stream_events(body: dict[str, Any]) -> list[bytes]:
    model = body.get("model") or "fake-model"
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    ident = f"chatcmpl-fake{next(_ids)}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        out: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            out["usage"] = None
        return b"data: " + _dumps(out) + b"\n\n"

    text, size = Settings.reply, max(1, Settings.chunk_chars)
    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": text[i : i + size]}) for i in range(0, len(text), size)]
    events.append(chunk({}, "stop"))
    if include_usage:
        usage = _usage(_tokens(_texts(body.get("messages"))), _completion_tokens(body))
        events.append(
            b"data: "
            + _dumps(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "service_tier": "default",
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage,
                }
            )
            + b"\n\n"
        )
    events.append(b"data: [DONE]\n\n")
    return events


class Http(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests answered in order."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.queue: asyncio.Queue[tuple[bytes, bytes] | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.worker = asyncio.get_running_loop().create_task(self.serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.queue.put_nowait((self.url, b"".join(self.body)))

    async def serve(self) -> None:
        while (item := await self.queue.get()) is not None:
            url, raw = item
            if Settings.delay:
                await asyncio.sleep(Settings.delay)
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            if url.split(b"?", 1)[0] != PATH:
                self.send(404, b'{"error":{"message":"no route"}}')
                continue
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                self.send(
                    400,
                    _dumps(
                        {
                            "error": {
                                "message": "messages: at least one message is required",
                                "type": "invalid_request_error",
                            }
                        }
                    ),
                )
                continue
            if body.get("stream") is True:
                head = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                out = [head]
                for event in stream_events(body):
                    out.append(b"%x\r\n%s\r\n" % (len(event), event))
                out.append(b"0\r\n\r\n")
                # Events go out one write each, as a real upstream's would.
                for piece in out:
                    transport.write(piece)
            else:
                self.send(200, completion(body))

    def send(self, status: int, body: bytes) -> None:
        assert self.transport is not None
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, reason, len(body), body)
        )


def serve(port: int) -> None:
    uvloop.install()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        server = await loop.create_server(Http, sock=sock, backlog=1024)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--reply", default=os.environ.get("FAKE_REPLY", "ok"))
    parser.add_argument("--chunk-chars", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--random-output", type=int, default=0)
    args = parser.parse_args()
    Settings.reply, Settings.chunk_chars, Settings.delay = (
        args.reply,
        args.chunk_chars,
        args.delay_ms / 1000,
    )
    Settings.random_output = args.random_output
    if args.workers == 1:
        serve(args.port)
        return
    procs = [multiprocessing.Process(target=serve, args=(args.port,)) for _ in range(args.workers)]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.pid is not None:
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
