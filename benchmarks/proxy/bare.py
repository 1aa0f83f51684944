"""The floors for a Python model proxy: two bare FastAPI endpoints on uvicorn.

    uvicorn bare:app --app-dir benchmarks/proxy --workers 2   # BENCH_UPSTREAM=http://127.0.0.1:PORT

* ``POST /v1/chat/completions`` answers the chat completion itself (the same body the
  fake upstream sends), without calling anything: HTTP parsing, routing, JSON in and out
  on FastAPI/uvicorn, which any Python service pays.
* ``POST /passthrough/v1/chat/completions`` forwards the body to the fake upstream with one
  shared ``httpx.AsyncClient`` and returns its answer (streamed through when the request
  asks for a stream): the least a Python proxy does, with no auth, no budget, no logging.

No auth, no run state, no policy, no budget, no ledger.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

app = FastAPI()
UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9100")
_client: httpx.AsyncClient | None = None
_n = 0


def client() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(
            base_url=UPSTREAM, timeout=60, limits=httpx.Limits(max_connections=256)
        )
    return _client


@app.post("/v1/chat/completions")
async def answer(request: Request) -> dict[str, Any]:
    global _n
    body = json.loads(await request.body())
    _n += 1
    chars = sum(len(m.get("content") or "") for m in body.get("messages", []))
    prompt, completion = max(1, -(-chars // 4)), 1
    return {
        "id": f"chatcmpl-bare{_n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "ok",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "service_tier": "default",
        "system_fingerprint": None,
    }


@app.post("/passthrough/v1/chat/completions")
async def passthrough(request: Request) -> Response:
    raw = await request.body()
    headers = {"content-type": "application/json", "authorization": "Bearer sk-upstream"}
    if b'"stream":true' not in raw.replace(b" ", b""):
        got = await client().post("/v1/chat/completions", content=raw, headers=headers)
        return Response(got.content, status_code=got.status_code, media_type="application/json")
    req = client().build_request("POST", "/v1/chat/completions", content=raw, headers=headers)
    upstream = await client().send(req, stream=True)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for piece in upstream.aiter_raw():
                yield piece
        finally:
            await upstream.aclose()

    return StreamingResponse(
        relay(), status_code=upstream.status_code, media_type="text/event-stream"
    )


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}
