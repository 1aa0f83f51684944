"""Credentials reach tools per call and nowhere else; webhooks announce approvals."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from _stack import Stack
from server_tools import SECRET_SPEC
from sqlalchemy import create_engine, text

from warden.notify import verify_signature
from warden.store import metadata

PLANTED = "sk_live_PLANTED_9f8e7d6c5b4a"


def _all_stored_bytes(store_url: str) -> bytes:
    if store_url.startswith("sqlite"):
        path = Path(store_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    engine = create_engine(store_url)
    chunks = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(text(f"SELECT * FROM {table.name}")):
                chunks.append(repr(tuple(row)).encode())
    engine.dispose()
    return b"\n".join(chunks)


def test_planted_secret_is_never_stored_or_shown(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_TEST_PSP_KEY", PLANTED)
    stack = make_stack(SECRET_SPEC, "secret_tools")
    bot = stack.client("bot")
    seen: list[str] = []
    run = bot.post("/v1/runs", json={"workflow": "psp", "agent": "bot", "task": "charge"})
    seen.append(run.text)
    run_id = run.json()["run_id"]
    ok = bot.post(f"/v1/runs/{run_id}/actions", json={"tool": "charge", "args": {"amount": 12.5}})
    failed = bot.post(
        f"/v1/runs/{run_id}/actions", json={"tool": "charge_fails", "args": {"amount": 3.0}}
    )
    pending = bot.post(
        f"/v1/runs/{run_id}/actions", json={"tool": "charge", "args": {"amount": 5000.0}}
    )
    approval = pending.json()["approval_id"]
    stack.client("lead").post(
        f"/v1/approvals/{approval}/decision", json={"decision": "approve", "rationale": "ok"}
    )
    executed = bot.post(f"/v1/approvals/{approval}/execute")
    seen += [ok.text, failed.text, pending.text, executed.text]
    audit = stack.client("audit")
    seen.append(audit.get(f"/v1/ledger/runs/{run_id}/events").text)
    seen.append(audit.get("/v1/ledger/export").text)
    seen.append(stack.client("lead").get(f"/v1/approvals/{approval}").text)

    assert ok.json()["status"] == "allowed" and ok.json()["result"]["auth"] == "[REDACTED]"
    assert failed.json()["kind"] == "tool_error" and "[REDACTED]" in failed.json()["detail"]
    assert executed.json()["status"] == "allowed"
    for body in seen:
        assert PLANTED not in body
    for app in (stack.app,):
        for gateway in app.state.warden.gateways.values():
            gateway.flush()
    assert PLANTED.encode() not in _all_stored_bytes(stack.store_url)


def test_missing_credential_is_a_clear_failure(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WARDEN_TEST_PSP_KEY", raising=False)
    stack = make_stack(SECRET_SPEC, "secret_tools")
    bot = stack.client("bot")
    run_id = bot.post("/v1/runs", json={"workflow": "psp", "agent": "bot", "task": "x"}).json()[
        "run_id"
    ]
    result = bot.post(
        f"/v1/runs/{run_id}/actions", json={"tool": "charge", "args": {"amount": 1.0}}
    ).json()
    assert result["status"] == "failed" and result["kind"] == "credential_error"
    assert "WARDEN_TEST_PSP_KEY" in result["detail"]


class _Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def test_new_approval_sends_a_signed_webhook(
    make_stack: Callable[..., Stack],
    receiver: _Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    monkeypatch.setenv("WARDEN_TEST_HOOK_SECRET", "hook-secret-123456")
    hooks = tmp_path / "hooks.json"
    hooks.write_text(
        json.dumps(
            [
                {
                    "url": receiver.url,
                    "secret": "env:WARDEN_TEST_HOOK_SECRET",
                    "events": ["approval_requested", "sla_breach"],
                }
            ]
        )
    )
    stack = make_stack(webhooks_file=str(hooks))
    bot = stack.client("bot")
    run_id = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "hook"}).json()[
        "run_id"
    ]
    pending = bot.post(
        f"/v1/runs/{run_id}/actions",
        json={"tool": "pay", "args": {"order_id": "o1", "customer_id": "c1", "amount": 300.0}},
    ).json()
    deadline = time.time() + 10
    while not receiver.requests and time.time() < deadline:
        time.sleep(0.05)
    assert receiver.requests, "no webhook arrived"
    headers, body = receiver.requests[0]
    assert headers["x-warden-event"] == "approval_requested"
    assert verify_signature("hook-secret-123456", headers["x-warden-signature"], body)
    payload = json.loads(body)
    assert (
        payload["payload"]["approval_id"] == pending["approval_id"] and payload["tenant"] == "acme"
    )
