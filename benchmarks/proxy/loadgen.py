"""Clients of the model-proxy benchmark that wrk cannot be: streams and the budget race.

    python loadgen.py stream --url URL --key KEY --conns C --seconds S [--warmup W] [--tag T]
    python loadgen.py race --url URL [--url URL2] --key KEY --n 1000 --max-tokens 1000 ...

Both print one JSON object on stdout. Each runs in a process of its own, on uvloop, with a
minimal HTTP/1.1 client on asyncio streams (keep-alive, Content-Length requests, chunked
or sized responses): no HTTP library between the socket and the clock, so the time to
first token is the time the first SSE event reached the socket, and the client costs
little CPU (it is reported: ``client_cpu_s``).

* ``stream``: C connections, each sending streamed chat completions back to back
  (closed loop) for ``seconds`` after ``warmup``; per request the time to the first
  ``data:`` event (TTFT) and to the end of the stream. A stream counts as an error unless
  it is a 200 that ends with ``data: [DONE]``.
* ``race``: ``n`` requests sent at once (one connection each, spread over the URLs in
  turn), each its own conversation; per request the status, the usage the reply reports,
  the proxy's own cost header and, for a refusal, its body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import uvloop


class Conn:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=1 << 22
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(
        self, path: str, headers: dict[str, str], body: bytes, on_first: Any = None
    ) -> tuple[int, dict[str, str], bytes, float | None]:
        """Send one request; returns status, headers, body and the perf_counter time at
        which the first body bytes holding ``data:`` arrived (None if never)."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(head.encode() + b"\r\n" + body)
        reader = self.reader
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        got: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            got[k.strip().lower()] = v.strip()
        first: float | None = None
        out = bytearray()
        if got.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                data = await reader.readexactly(size + 2)
                if first is None and b"data:" in data:
                    first = time.perf_counter()
                out += data[:-2]
        elif "content-length" in got:
            out += await reader.readexactly(int(got["content-length"]))
            if first is None and b"data:" in out:
                first = time.perf_counter()
        else:  # read to the end (connection: close)
            out += await reader.read()
            self.close()
        if got.get("connection", "").lower() == "close":
            self.close()
        return status, got, bytes(out), first


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]  # nearest rank


def _body(model: str, tag: str, stream: bool, max_tokens: int, content: str) -> bytes:
    msg = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": content},
        ],
        "max_tokens": max_tokens,
    }
    if stream:
        msg["stream"] = True
    return json.dumps(msg, separators=(",", ":")).encode()


async def stream_cmd(args: argparse.Namespace) -> dict[str, Any]:
    path = urlsplit(args.url).path or "/v1/chat/completions"
    ttft: list[float] = []
    total: list[float] = []
    errors = 0
    first_bad = ""
    phase = {"measure": False, "stop": False}

    async def one(i: int) -> None:
        nonlocal errors, first_bad
        conn = Conn(args.url)
        headers = {
            "Authorization": f"Bearer {args.key}",
            "Content-Type": "application/json",
            "X-Warden-Conversation": f"{args.tag}-{i}",
        }
        body = _body(args.model, args.tag, True, 64, f"Say ok. (connection {i})")
        while not phase["stop"]:
            t0 = time.perf_counter()
            try:
                status, _h, data, first = await conn.post(path, headers, body)
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                conn.close()
                errors += phase["measure"]
                first_bad = first_bad or repr(exc)
                await asyncio.sleep(0.01)
                continue
            t1 = time.perf_counter()
            if not phase["measure"]:
                continue
            if status != 200 or not data.rstrip().endswith(b"data: [DONE]") or first is None:
                errors += 1
                first_bad = first_bad or f"{status} {data[:300]!r}"
                continue
            ttft.append((first - t0) * 1e6)
            total.append((t1 - t0) * 1e6)
        conn.close()

    tasks = [asyncio.create_task(one(i)) for i in range(args.conns)]
    await asyncio.sleep(args.warmup)
    phase["measure"] = True
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.sleep(args.seconds)
    phase["stop"] = True
    elapsed = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.wait(tasks, timeout=30)
    return {
        "requests": len(total),
        "rps": len(total) / elapsed,
        "errors": errors,
        "first_bad": first_bad,
        "ttft_p50_us": _pct(ttft, 0.5),
        "ttft_p99_us": _pct(ttft, 0.99),
        "total_p50_us": _pct(total, 0.5),
        "total_p99_us": _pct(total, 0.99),
        "ttft_mean_us": statistics.fmean(ttft) if ttft else None,
        "client_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
        "seconds": elapsed,
    }


async def race_cmd(args: argparse.Namespace) -> dict[str, Any]:
    urls = args.url
    content = "budget race " + ("lorem ipsum " * (args.input_chars // 12 + 1))[: args.input_chars]
    go = asyncio.Event()
    results: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        url = urls[i % len(urls)]
        conn = Conn(url)
        try:
            await conn.open()
        except OSError as exc:
            results.append({"i": i, "status": 0, "error": repr(exc)})
            return
        headers = {
            "Authorization": f"Bearer {args.key}",
            "Content-Type": "application/json",
            "X-Warden-Conversation": f"{args.tag}-{i}",
        }
        body = _body(args.model, args.tag, False, args.max_tokens, f"{i} {content}")
        await go.wait()
        t0 = time.perf_counter()
        try:
            status, got, data, _ = await asyncio.wait_for(
                conn.post(urlsplit(url).path or "/v1/chat/completions", headers, body), args.timeout
            )
        except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as exc:
            results.append({"i": i, "status": 0, "error": repr(exc), "replica": i % len(urls)})
            return
        finally:
            conn.close()
        row: dict[str, Any] = {
            "i": i,
            "status": status,
            "replica": i % len(urls),
            "ms": round((time.perf_counter() - t0) * 1000, 1),
        }
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if status == 200 and isinstance(parsed, dict):
            usage = parsed.get("usage") or {}
            row["input_tokens"] = usage.get("prompt_tokens")
            row["output_tokens"] = usage.get("completion_tokens")
            row["cost_header"] = got.get("x-warden-cost-usd") or got.get("x-litellm-response-cost")
            row["capped"] = got.get("x-warden-max-tokens")
        else:
            row["error"] = data[:600].decode("utf-8", "replace")
        results.append(row)

    tasks = [asyncio.create_task(one(i)) for i in range(args.n)]
    await asyncio.sleep(args.settle)  # let every connection open first
    t0 = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    return {"seconds": time.perf_counter() - t0, "results": sorted(results, key=lambda r: r["i"])}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--url", required=True)
    s.add_argument("--key", default="none")
    s.add_argument("--model", default="gpt-4o")
    s.add_argument("--conns", type=int, default=1)
    s.add_argument("--seconds", type=float, default=8.0)
    s.add_argument("--warmup", type=float, default=2.0)
    s.add_argument("--tag", default="s")
    r = sub.add_parser("race")
    r.add_argument("--url", action="append", required=True)
    r.add_argument("--key", default="none")
    r.add_argument("--model", default="gpt-4o")
    r.add_argument("--n", type=int, default=1000)
    r.add_argument("--max-tokens", type=int, default=1000)
    r.add_argument("--input-chars", type=int, default=8000)
    r.add_argument("--timeout", type=float, default=300.0)
    r.add_argument("--settle", type=float, default=2.0)
    r.add_argument("--tag", default="race")
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = uvloop.run(stream_cmd(args) if args.cmd == "stream" else race_cmd(args))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
