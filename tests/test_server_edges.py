"""Bad input at the server's edges: nesting, lone surrogates, oversized and slow bodies,
slow headers (issue 7, hole k, and the HTTP side of hole h).

Served in process through ``httpx.ASGITransport`` where the transport is not what is
tested, on SQLite and PostgreSQL; the slow-client tests run a real ``warden serve`` on
loopback, because there the transport is the point.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _stack import free_port
from conftest import SPEC

from warden.auth import KeyStore
from warden.server import ServerSettings, create_app

TESTS = Path(__file__).parent
PROBLEM = "application/problem+json"
INVALID = "urn:warden:problem:invalid-input"


class Api:
    """An in-process server (fast path on or off) and clients for its keys."""

    def __init__(self, app: Any) -> None:
        self.app = app
        keys = KeyStore(app.state.warden.store)
        self.keys = {
            who: keys.create(name=who, role=role, tenant="acme", created_by="tests", **bound)[1]
            for who, role, bound in [
                ("bot", "agent", {"agent": "bot"}),
                ("lead", "approver", {"approval_roles": ["lead"]}),
                ("admin", "admin", {}),
            ]
        }
        self.clients: list[httpx.AsyncClient] = []

    def client(self, who: str) -> httpx.AsyncClient:
        made = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://warden.test",
            headers={"Authorization": f"Bearer {self.keys[who]}"},
        )
        self.clients.append(made)
        return made

    async def open_run(self) -> str:
        r = await self.client("bot").post(
            "/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "edges"}
        )
        assert r.status_code == 201, r.text
        run_id: str = r.json()["run_id"]
        return run_id

    async def events(self) -> int:
        r = await self.client("admin").get("/v1/ledger/verify")
        assert r.status_code == 200, r.text
        return int(r.json()["events"])


@pytest.fixture
async def make_api(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Api]]:
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(tmp_path / "effects.db"))
    spec = tmp_path / "shop.yaml"
    spec.write_text(SPEC)
    made: list[Api] = []

    def build(**overrides: Any) -> Api:
        settings = ServerSettings(
            store=store_url,
            specs=[str(spec)],
            tools=[f"{TESTS / 'server_tools.py'}:tools"],
            auto_migrate=True,
            max_body_bytes=64 * 1024,
            **overrides,
        )
        api = Api(create_app(settings))
        made.append(api)
        return api

    yield build
    for api in made:
        for client in api.clients:
            await client.aclose()
        api.app.state.warden.close()


def _nested(depth: int) -> bytes:
    """An action whose args nest ``depth`` levels below the body."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return ('{"tool": "save", "args": {"key": ' + inner + ', "value": 1}}').encode()


def _is_problem(r: httpx.Response, status: int, kind: str) -> bool:
    return (
        r.status_code == status
        and r.headers["content-type"] == PROBLEM
        and r.json()["type"] == f"urn:warden:problem:{kind}"
    )


# -- deeply nested JSON ---------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "routes"])
async def test_deeply_nested_json_is_400_problem_json(
    make_api: Callable[..., Api], fast_path: bool
) -> None:
    api = make_api(fast_path=fast_path)
    run_id = await api.open_run()
    bot = api.client("bot")
    before = await api.events()
    as_json = {"content-type": "application/json"}
    # 100 levels parse but are past the limit; 20,000 make json.loads itself give up.
    for depth in (100, 20_000):
        body = _nested(depth)
        answers = [
            await bot.post(f"/v1/runs/{run_id}/actions", content=body, headers=as_json),
            await bot.post("/v1/runs", content=body, headers=as_json),
        ]
        for r in answers:
            assert _is_problem(r, 400, "invalid-input"), (depth, r.status_code, r.text[:300])
            assert "nested deeper than" in r.json()["detail"]
    assert await api.events() == before
    # Nesting within the limit is served as before.
    ok = await bot.post(f"/v1/runs/{run_id}/actions", content=_nested(30), headers=as_json)
    assert ok.status_code == 200 and ok.json()["kind"] == "schema_error", ok.text


# -- lone surrogates ------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "routes"])
async def test_a_lone_surrogate_is_400_for_that_request_alone(
    make_api: Callable[..., Api], fast_path: bool
) -> None:
    api = make_api(fast_path=fast_path)
    bot, lead = api.client("bot"), api.client("lead")
    run_id = await api.open_run()
    pay = {"order_id": "o1", "customer_id": "c1", "amount": 300.0}
    pending = await bot.post(f"/v1/runs/{run_id}/actions", json={"tool": "pay", "args": pay})
    assert pending.json()["status"] == "pending", pending.text
    approval = pending.json()["approval_id"]
    before = await api.events()

    def raw(text: str) -> dict[str, Any]:
        # httpx would refuse to encode a lone surrogate itself: send the escape as text.
        return {"content": text.encode(), "headers": {"content-type": "application/json"}}

    answers = [
        # in an argument value, in an argument name, low and high halves, upper case
        await bot.post(
            f"/v1/runs/{run_id}/actions",
            **raw('{"tool": "save", "args": {"key": "a\\ud800b", "value": 1}}'),
        ),
        await bot.post(
            f"/v1/runs/{run_id}/actions",
            **raw('{"tool": "save", "args": {"\\uDC00": "x", "key": "k", "value": 1}}'),
        ),
        await bot.post(
            f"/v1/runs/{run_id}/actions",
            **raw('{"tool": "save", "args": {"key": ["ok", {"deep": "\\udfff"}], "value": 1}}'),
        ),
        # the tool name, on a route of its own
        await bot.post(f"/v1/runs/{run_id}/actions", **raw('{"tool": "\\ud800", "args": {}}')),
        await bot.post(
            "/v1/runs", **raw('{"workflow": "shop", "agent": "bot", "task": "t\\ud800"}')
        ),
        # a decision's rationale, and edited args
        await lead.post(
            f"/v1/approvals/{approval}/decision",
            **raw('{"decision": "approve", "rationale": "fine \\ud83d"}'),
        ),
        await lead.post(
            f"/v1/approvals/{approval}/decision",
            **raw(
                '{"decision": "approve", "rationale": "edited", "args": {"order_id": "o1",'
                ' "customer_id": "c1\\udc00", "amount": 50.0}}'
            ),
        ),
    ]
    for r in answers:
        assert _is_problem(r, 400, "invalid-input"), (r.status_code, r.text[:300])
        assert "lone surrogate" in r.json()["detail"]
    # Nothing of them was recorded, and the server serves everyone else as before.
    assert await api.events() == before
    pair = await bot.post(
        f"/v1/runs/{run_id}/actions",
        **raw('{"tool": "save", "args": {"key": "smile \\ud83d\\ude00", "value": 1}}'),
    )
    assert pair.status_code == 200 and pair.json()["status"] == "allowed", pair.text
    decided = await lead.post(
        f"/v1/approvals/{approval}/decision", json={"decision": "approve", "rationale": "ok"}
    )
    assert decided.status_code == 200 and decided.json()["state"] == "approved", decided.text
    verify = await api.client("admin").get("/v1/ledger/verify")
    assert verify.json()["ok"] is True, verify.text


# -- bodies over the limit ------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "routes"])
async def test_a_chunked_body_over_the_limit_is_413(
    make_api: Callable[..., Api], fast_path: bool
) -> None:
    api = make_api(fast_path=fast_path)
    bot, lead = api.client("bot"), api.client("lead")
    run_id = await api.open_run()
    before = await api.events()

    def chunked(prefix: bytes) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            yield prefix
            for _ in range(20):  # 20 x 8 KiB past a 64 KiB limit; no Content-Length
                yield b" " * 8192
            yield b"}"

        return chunks()

    as_json = {"content-type": "application/json"}
    answers = [
        await bot.post(
            f"/v1/runs/{run_id}/actions",
            content=chunked(b'{"tool": "save", "args": {"key": "k", "value": 1}'),
            headers=as_json,
        ),
        await bot.post(
            "/v1/runs",
            content=chunked(b'{"workflow": "shop", "agent": "bot", "task": "t"'),
            headers=as_json,
        ),
        await lead.post(
            "/v1/approvals/apr_nope/decision",
            content=chunked(b'{"decision": "approve", "rationale": "r"'),
            headers=as_json,
        ),
    ]
    for r in answers:
        assert "content-length" not in r.request.headers
        assert _is_problem(r, 413, "payload-too-large"), (r.status_code, r.text[:300])
    assert await api.events() == before


async def test_a_body_that_stops_arriving_is_408(make_api: Callable[..., Api]) -> None:
    api = make_api(body_timeout_s=0.2)
    run_id = await api.open_run()
    before = await api.events()
    stalled = asyncio.Event()  # never set: the client stops sending mid-body

    async def slow() -> AsyncIterator[bytes]:
        yield b'{"tool": "save", "args": {"key": "k", '
        await stalled.wait()
        yield b'"value": 1}}'

    # The bound only keeps a server without a body deadline from hanging the suite.
    async with asyncio.timeout(60):
        r = await api.client("bot").post(
            f"/v1/runs/{run_id}/actions",
            content=slow(),
            headers={"content-type": "application/json"},
        )
    assert _is_problem(r, 408, "request-timeout"), (r.status_code, r.text[:300])
    assert r.headers["connection"] == "close"
    assert await api.events() == before


# -- slow clients against a real `warden serve` -----------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[int]:
    """``warden serve`` (the demo workflow on SQLite) with 1 s header and body timeouts."""
    port = free_port()
    env = {**os.environ, "WARDEN_STORE": f"sqlite:///{tmp_path / 'serve.db'}"}
    env.pop("WARDEN_SPECS", None)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "warden", "serve", "--port", str(port), "--migrate",
            "--header-timeout", "1", "--body-timeout", "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "warden serve did not start"
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout:
            proc.stdout.close()


def _closed_by_server(sock: socket.socket, drip: bytes | None) -> tuple[bool, bytes]:
    """Keep the connection (dripping ``drip`` every 0.2 s, if given) until the server
    closes it; the loop is bounded so a server that never closes fails the test."""
    sock.settimeout(0.2)
    received = b""
    for _ in range(150):  # 30 s at most: far past the 1 s timeouts
        try:
            if drip is not None:
                sock.sendall(drip)
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def test_slow_clients_are_cut_off_by_warden_serve(served: int) -> None:
    # Connects and says nothing.
    with socket.create_connection(("127.0.0.1", served)) as silent:
        closed, _ = _closed_by_server(silent, None)
        assert closed
    # Sends its headers one at a time, forever (slowloris).
    with socket.create_connection(("127.0.0.1", served)) as loris:
        loris.sendall(b"GET /healthz HTTP/1.1\r\nHost: warden\r\n")
        closed, _ = _closed_by_server(loris, b"X-Slow: 1\r\n")
        assert closed
    # Sends its headers, then part of the body, then nothing.
    with socket.create_connection(("127.0.0.1", served)) as stall:
        stall.sendall(
            b"POST /v1/runs HTTP/1.1\r\nHost: warden\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\nAuthorization: Bearer wdn_x_y\r\n\r\n{\"workflow\": "
        )
        closed, answer = _closed_by_server(stall, None)
        assert closed
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert json.loads(body)["type"] == "urn:warden:problem:request-timeout"
    # Everyone else is served meanwhile and after.
    assert httpx.get(f"http://127.0.0.1:{served}/healthz").status_code == 200
