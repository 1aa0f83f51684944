"""Webhook notifications: the outbox, signed delivery to a real HTTP receiver on loopback,
retries with backoff, giving up, two dispatchers racing, and secrets kept out of the store."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import Table, func, select

from warden.errors import UsageError
from warden.notify import (
    Dispatcher,
    NotifyError,
    WebhookTarget,
    backoff_delay,
    enqueue,
    load_webhook_targets,
    sign,
    verify_signature,
)
from warden.secrets import SecretResolver
from warden.store import Store
from warden.store._tables import outbox, webhook_deliveries

SECRET = "whsec_Qz8vN3kLm1pXr7Tb"
T0 = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)


# -- a real receiver on loopback ------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server in a thread that records requests and fails on demand."""

    requests: list[Received] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # path -> failures left
    fail_status: int = 500
    fail_body: bytes = b"receiver is down"
    fail_headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, n: int, path: str = "/hook") -> None:
        with self.lock:
            self.fail[path] = n

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver.lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    left = receiver.fail.get(self.path, 0)
                    if left:
                        receiver.fail[self.path] = left - 1
                status, reply = (receiver.fail_status, receiver.fail_body) if left else (200, b"ok")
                self.send_response(status)
                for name, value in receiver.fail_headers.items() if left else ():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeout test) is not an error here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.dispose()


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def resolver() -> SecretResolver:
    return SecretResolver(environ={"WARDEN_WEBHOOK_SECRET": SECRET})


def target(url: str, **kw: Any) -> WebhookTarget:
    return WebhookTarget(url=url, secret="env:WARDEN_WEBHOOK_SECRET", **kw)


def add_event(
    store: Store,
    now: datetime,
    kind: str = "approval_requested",
    tenant: str = "acme",
    payload: dict[str, Any] | None = None,
) -> None:
    with store.write() as conn:
        enqueue(conn, tenant=tenant, kind=kind, payload=payload or {"approval_id": "ap1"}, now=now)


def rows(store: Store, table: Table) -> list[dict[str, Any]]:
    with store.read() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


def dispatcher(store: Store, targets: list[WebhookTarget], clock: Clock, **kw: Any) -> Dispatcher:
    return Dispatcher(store, targets, resolver(), clock=clock, **kw)


# -- signing --------------------------------------------------------------------------------


def test_sign_and_verify_signature() -> None:
    body = b'{"id":1}'
    ts = int(T0.timestamp())
    header = sign(SECRET, body, ts)
    assert header.startswith(f"t={ts},v1=")
    assert len(header.split("v1=")[1]) == 64
    assert verify_signature(SECRET, header, body, now=T0)
    assert verify_signature(SECRET, header, body, now=T0 + timedelta(seconds=300))
    assert not verify_signature(SECRET, header, body, now=T0 + timedelta(seconds=301))
    assert not verify_signature(SECRET, header, body, now=T0 - timedelta(seconds=301))
    assert not verify_signature("another-secret", header, body, now=T0)
    assert not verify_signature(SECRET, header, body + b" ", now=T0)
    # The timestamp is signed: moving it forward breaks the signature.
    moved = header.replace(f"t={ts}", f"t={ts + 10}")
    assert not verify_signature(SECRET, moved, body, now=T0)
    # Several v1 values (secret rotation): any may match.
    rotated = f"{header},v1={sign('old-secret', body, ts).split('v1=')[1]}"
    assert verify_signature(SECRET, rotated, body, now=T0)
    assert verify_signature("old-secret", rotated, body, now=T0)
    for bad in ("", "garbage", f"t={ts}", "v1=abc", f"t=x,v1={'0' * 64}", f"t={ts},v1"):
        assert not verify_signature(SECRET, bad, body, now=T0)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    import random

    rng = random.Random(7)
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (500, 300.0)]:
        for _ in range(50):
            delay = backoff_delay(attempt, 1.0, 300.0, rng)
            assert step / 2 <= delay <= step
    delays = {round(backoff_delay(5, 1.0, 300.0, rng), 6) for _ in range(20)}
    assert len(delays) > 1  # jittered


# -- configuration --------------------------------------------------------------------------


def test_webhook_target_validation() -> None:
    t = WebhookTarget(url="https://hooks.example/x", secret="file:HOOK", events=["sla_breach"])
    assert t.timeout_s == 5
    assert t.wants("sla_breach") and not t.wants("approval_requested")
    assert target("http://h.example").wants("anything")
    with pytest.raises(ValidationError, match="Extra inputs"):
        WebhookTarget.model_validate({"url": "https://h.example", "secret": "env:X", "retries": 3})
    with pytest.raises(ValidationError, match="http:// or https://"):
        target("ftp://h.example/x")
    with pytest.raises(ValidationError, match="cannot verify"):
        WebhookTarget(url="https://h.example", secret="hmac:MASTER")
    with pytest.raises(ValidationError, match="greater than 0"):
        target("https://h.example", timeout_s=0)
    # A secret pasted in place of its reference is refused without being echoed.
    with pytest.raises(ValidationError) as info:
        WebhookTarget(url="https://h.example", secret=SECRET)
    assert "env:WARDEN_WEBHOOK_SECRET" in str(info.value)
    assert SECRET not in str(info.value)


def test_load_webhook_targets(tmp_path: Path) -> None:
    listed = tmp_path / "hooks.yaml"
    listed.write_text(
        "- url: https://hooks.example/a\n  secret: env:A_SECRET\n  events: [sla_breach]\n"
        "- {url: 'https://hooks.example/b', secret: 'file:B', timeout_s: 2}\n"
    )
    a, b = load_webhook_targets(listed)
    assert (a.url, a.secret, a.events, b.timeout_s) == (
        "https://hooks.example/a",
        "env:A_SECRET",
        ["sla_breach"],
        2,
    )
    wrapped = tmp_path / "hooks.json"
    wrapped.write_text(json.dumps({"webhooks": [{"url": "http://h.example", "secret": "env:S"}]}))
    assert [t.url for t in load_webhook_targets(wrapped)] == ["http://h.example"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"- url: https://hooks.example\n  secret: {SECRET}\n  colour: red\n")
    with pytest.raises(NotifyError) as info:
        load_webhook_targets(bad)
    assert "[0.secret]" in str(info.value) and "[0.colour]" in str(info.value)
    assert SECRET not in str(info.value)
    with pytest.raises(NotifyError, match="list of targets"):
        bad.write_text("url: https://hooks.example\n")
        load_webhook_targets(bad)


def test_dispatcher_settings_are_checked(store_url: str) -> None:
    store = Store(store_url)
    try:
        with pytest.raises(UsageError, match="lease_s"):
            Dispatcher(store, [target("http://h.example", timeout_s=40)], resolver())
        with pytest.raises(UsageError, match="distinct URLs"):
            Dispatcher(store, [target("http://h.example/a")] * 2, resolver())
        with pytest.raises(UsageError, match="max_attempts"):
            Dispatcher(store, [], resolver(), max_attempts=0)
    finally:
        store.dispose()


def test_enqueue_checks_its_arguments(store: Store) -> None:
    with store.write() as conn:
        with pytest.raises(UsageError, match="timezone-aware"):
            enqueue(conn, tenant="acme", kind="k", payload={}, now=datetime(2030, 1, 1))  # noqa: DTZ001
        with pytest.raises(UsageError, match="kind"):
            enqueue(conn, tenant="acme", kind="x" * 41, payload={}, now=T0)


# -- delivery -------------------------------------------------------------------------------


async def test_delivers_a_signed_notification(
    store: Store, receiver: Receiver, clock: Clock
) -> None:
    add_event(store, T0 - timedelta(seconds=5), payload={"approval_id": "ap1", "amount": 120.5})
    async with dispatcher(store, [target(receiver.url + "/hook")], clock) as d:
        assert await d.run_once() == 1
        assert await d.run_once() == 0  # nothing left

    [req] = receiver.requests
    assert req.path == "/hook"
    headers = {k.lower(): v for k, v in req.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-warden-event"] == "approval_requested"
    [row] = rows(store, outbox)
    assert headers["x-warden-delivery"] == str(row["id"])
    signature = headers["x-warden-signature"]
    assert verify_signature(SECRET, signature, req.body, now=clock())
    assert not verify_signature("wrong-secret", signature, req.body, now=clock())
    assert not verify_signature(SECRET, signature, req.body.replace(b"120.5", b"999"), now=clock())
    body = json.loads(req.body)
    assert body == {
        "id": row["id"],
        "kind": "approval_requested",
        "tenant": "acme",
        "created_at": "2030-05-06T07:08:04.000000Z",
        "payload": {"approval_id": "ap1", "amount": 120.5},
    }

    assert row["state"] == "delivered"
    assert row["attempts"] == 1
    assert row["delivered_at"] == T0
    assert row["lease_until"] is None
    assert row["last_error"] is None
    [delivery] = rows(store, webhook_deliveries)
    assert delivery["outbox_id"] == row["id"]
    assert delivery["url"] == receiver.url + "/hook"
    assert (delivery["attempt"], delivery["status_code"], delivery["error"]) == (1, 200, None)
    assert delivery["duration_ms"] >= 0
    assert delivery["at"] == T0


async def test_retries_with_backoff_until_delivered(
    store: Store, receiver: Receiver, clock: Clock
) -> None:
    receiver.fail_next(2)
    add_event(store, T0)
    async with dispatcher(store, [target(receiver.url + "/hook")], clock) as d:
        assert await d.run_once() == 0
        [row] = rows(store, outbox)
        assert (row["state"], row["attempts"], row["lease_until"]) == ("pending", 1, None)
        assert row["last_error"] == f"{receiver.url}/hook: HTTP 500: receiver is down"
        # First retry after 0.5-1 s (base 1 s, equal jitter).
        assert T0 + timedelta(seconds=0.5) <= row["next_attempt_at"] <= T0 + timedelta(seconds=1)

        clock.advance(0.4)
        assert await d.run_once() == 0  # not due yet: nothing sent
        assert len(receiver.requests) == 1

        clock.now = row["next_attempt_at"]
        assert await d.run_once() == 0
        [row] = rows(store, outbox)
        assert row["attempts"] == 2
        wait = (row["next_attempt_at"] - clock.now).total_seconds()
        assert 1.0 <= wait <= 2.0  # second retry: 1-2 s

        clock.now = row["next_attempt_at"]
        assert await d.run_once() == 1

    [row] = rows(store, outbox)
    assert (row["state"], row["attempts"], row["last_error"]) == ("delivered", 3, None)
    deliveries = rows(store, webhook_deliveries)
    assert [(x["attempt"], x["status_code"]) for x in deliveries] == [(1, 500), (2, 500), (3, 200)]
    assert {r.headers["X-Warden-Delivery"] for r in receiver.requests} == {str(row["id"])}
    # Each attempt is signed afresh, at its own time.
    for r, x in zip(receiver.requests, deliveries, strict=True):
        assert verify_signature(SECRET, r.headers["X-Warden-Signature"], r.body, now=x["at"])


async def test_retry_after_is_honoured(store: Store, receiver: Receiver, clock: Clock) -> None:
    receiver.fail_next(1)
    receiver.fail_status = 429
    receiver.fail_headers = {"Retry-After": "120"}
    add_event(store, T0)
    async with dispatcher(store, [target(receiver.url + "/hook")], clock) as d:
        assert await d.run_once() == 0
        [row] = rows(store, outbox)
        # The receiver asked for 120 s; the jittered backoff alone would be 0.5-1 s.
        assert row["next_attempt_at"] == T0 + timedelta(seconds=120)
        assert row["last_error"].endswith("HTTP 429: receiver is down")
        clock.advance(119)
        assert await d.run_once() == 0
        clock.advance(1)
        assert await d.run_once() == 1
    assert len(receiver.requests) == 2


async def test_fails_after_max_attempts(store: Store, receiver: Receiver, clock: Clock) -> None:
    receiver.fail_next(100)
    add_event(store, T0)
    async with dispatcher(store, [target(receiver.url + "/hook")], clock, max_attempts=3) as d:
        finished = []
        for _ in range(3):
            finished.append(await d.run_once())
            [row] = rows(store, outbox)
            clock.now = max(clock.now, row["next_attempt_at"])
        assert finished == [0, 0, 1]
        clock.advance(3600)
        assert await d.run_once() == 0

    [row] = rows(store, outbox)
    assert (row["state"], row["attempts"], row["lease_until"]) == ("failed", 3, None)
    assert "HTTP 500" in row["last_error"]
    assert row["delivered_at"] is None
    assert len(receiver.requests) == 3
    assert [x["attempt"] for x in rows(store, webhook_deliveries)] == [1, 2, 3]


async def test_unreachable_and_slow_receivers_are_recorded(
    store: Store, receiver: Receiver, clock: Clock
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    receiver.delay_s = 0.5
    slow = target(receiver.url + "/slow", timeout_s=0.1)
    add_event(store, T0)
    async with dispatcher(store, [target(dead), slow], clock) as d:
        assert await d.run_once() == 0
    errors = {x["url"]: x for x in rows(store, webhook_deliveries)}
    assert errors[dead]["status_code"] is None
    assert errors[dead]["error"].startswith("ConnectError")
    assert errors[receiver.url + "/slow"]["status_code"] is None
    assert "timed out" in errors[receiver.url + "/slow"]["error"].lower()
    assert errors[receiver.url + "/slow"]["duration_ms"] < 450
    [row] = rows(store, outbox)
    assert row["state"] == "pending" and row["attempts"] == 1


async def test_event_filters_and_only_failed_targets_are_retried(
    store: Store, receiver: Receiver, clock: Clock
) -> None:
    approvals_only = target(receiver.url + "/a", events=["approval_requested"])
    everything = target(receiver.url + "/b")
    receiver.fail_next(1, "/b")
    add_event(store, T0, kind="sla_breach")
    add_event(store, T0, kind="approval_requested")
    async with dispatcher(store, [approvals_only, everything], clock) as d:
        # sla_breach -> /b only (fails once); approval_requested -> /a ok, /b fails... in some
        # order: /b's first failure hits whichever row reaches it first.
        await d.run_once()
        for _ in range(3):
            pending = [r for r in rows(store, outbox) if r["state"] == "pending"]
            if not pending:
                break
            clock.now = max(r["next_attempt_at"] for r in pending)
            await d.run_once()

    states = {r["kind"]: (r["state"], r["attempts"]) for r in rows(store, outbox)}
    assert states["sla_breach"][0] == states["approval_requested"][0] == "delivered"
    by_kind: dict[str, list[str]] = {}
    for r in receiver.requests:
        by_kind.setdefault(r.headers["X-Warden-Event"], []).append(r.path)
    assert "/a" not in by_kind["sla_breach"]
    # /a answered 200 once and is never sent the row again, whatever /b does.
    assert by_kind["approval_requested"].count("/a") == 1
    assert sorted(by_kind["sla_breach"] + by_kind["approval_requested"]).count("/b") == 3


async def test_kind_no_target_wants_is_marked_delivered(
    store: Store, receiver: Receiver, clock: Clock
) -> None:
    add_event(store, T0, kind="run_finished")
    only = target(receiver.url + "/a", events=["approval_requested"])
    async with dispatcher(store, [only], clock) as d:
        assert await d.run_once() == 1
    [row] = rows(store, outbox)
    assert (row["state"], row["attempts"]) == ("delivered", 1)
    assert receiver.requests == []
    assert rows(store, webhook_deliveries) == []


async def test_enqueue_in_a_rolled_back_transaction_sends_nothing(
    store: Store, receiver: Receiver, clock: Clock
) -> None:
    with pytest.raises(RuntimeError), store.write() as conn:
        enqueue(conn, tenant="acme", kind="approval_requested", payload={"n": 1}, now=T0)
        raise RuntimeError("the event itself failed")
    assert rows(store, outbox) == []
    async with dispatcher(store, [target(receiver.url + "/hook")], clock) as d:
        assert await d.run_once() == 0
        assert receiver.requests == []
        add_event(store, T0, payload={"n": 2})  # control: a committed event is sent
        assert await d.run_once() == 1
    [req] = receiver.requests
    assert json.loads(req.body)["payload"] == {"n": 2}


async def test_two_dispatchers_deliver_each_row_exactly_once(
    store_url: str, receiver: Receiver, clock: Clock
) -> None:
    # Two replicas: separate stores (engines, connection pools) on one database.
    store_a, store_b = Store(store_url), Store(store_url)
    receiver.delay_s = 0.005
    try:
        for i in range(30):
            add_event(store_a, T0, payload={"i": i})
        hook = [target(receiver.url + "/hook")]
        async with (
            Dispatcher(store_a, hook, resolver(), clock=clock, concurrency=4) as a,
            Dispatcher(store_b, hook, resolver(), clock=clock, concurrency=4) as b,
        ):
            results = await asyncio.gather(a.run_once(), b.run_once())
            assert sum(results) == 30
            assert await a.run_once() == await b.run_once() == 0
        ids = [r.headers["X-Warden-Delivery"] for r in receiver.requests]
        assert len(ids) == 30 and len(set(ids)) == 30
        assert {r["state"] for r in rows(store_a, outbox)} == {"delivered"}
        assert len(rows(store_a, webhook_deliveries)) == 30
    finally:
        store_a.dispose()
        store_b.dispose()


def test_a_claimed_row_cannot_be_claimed_again_until_its_lease_expires(
    store: Store, clock: Clock
) -> None:
    add_event(store, T0)
    [row] = rows(store, outbox)
    a = dispatcher(store, [], clock, lease_s=30)
    b = dispatcher(store, [], clock, lease_s=30)
    claimed = a._claim(row["id"], T0)
    assert claimed is not None
    assert b._claim(row["id"], T0) is None
    assert b._claim(row["id"], T0 + timedelta(seconds=29)) is None
    # a died: after the lease, b may take over; a can no longer finish the row.
    taken = b._claim(row["id"], T0 + timedelta(seconds=31))
    assert taken is not None and taken.lease_until != claimed.lease_until
    assert a._record(claimed, [], T0 + timedelta(seconds=32)) is False
    assert b._record(taken, [], T0 + timedelta(seconds=32)) is True
    [row] = rows(store, outbox)
    assert row["state"] == "delivered"


async def test_secrets_stay_out_of_the_store_and_logs(
    store: Store, receiver: Receiver, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="warden.notify")
    # A receiver that echoes the secret back in its error page.
    receiver.fail_next(5)
    receiver.fail_body = f"bad signature; expected secret {SECRET}".encode()
    missing = WebhookTarget(url=receiver.url + "/other", secret="env:WARDEN_MISSING_SECRET")
    add_event(store, T0)
    async with dispatcher(
        store, [target(receiver.url + "/hook"), missing], clock, max_attempts=2
    ) as d:
        await d.run_once()
        clock.now = rows(store, outbox)[0]["next_attempt_at"]
        assert await d.run_once() == 1

    [row] = rows(store, outbox)
    assert row["state"] == "failed"
    assert "[REDACTED]" in row["last_error"]
    deliveries = rows(store, webhook_deliveries)
    other = [x for x in deliveries if x["url"].endswith("/other")]
    assert len(other) == 2
    assert "WARDEN_MISSING_SECRET is not set" in other[0]["error"]
    assert receiver.paths() == ["/hook", "/hook"]  # nothing is sent unsigned
    dumped = json.dumps([rows(store, outbox), deliveries], default=str)
    assert SECRET not in dumped
    assert "attempt 2/2 failed" in caplog.text
    assert SECRET not in caplog.text


def test_passwords_in_urls_are_masked() -> None:
    from warden.notify._dispatcher import display_url

    assert display_url("https://user:pw-123456@h.example/x") == "https://user:***@h.example/x"
    assert display_url("https://h.example/x?a=1") == "https://h.example/x?a=1"


async def test_run_forever_keeps_going_after_errors(
    store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    add_event(store, datetime.now(UTC))
    d = Dispatcher(store, [target(receiver.url + "/hook")], resolver())
    real = d._due_ids
    calls = 0

    def flaky(now: datetime) -> list[int]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("store hiccup")
        return real(now)

    d._due_ids = flaky  # type: ignore[method-assign]
    stop = asyncio.Event()
    async with d:
        task = asyncio.create_task(d.run_forever(stop, interval_s=0.01))
        deadline = time.monotonic() + 10
        while not receiver.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert len(receiver.requests) == 1
    assert caplog.text.count("webhook dispatch pass failed") == 2
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(outbox)).scalar_one() == 1
    assert rows(store, outbox)[0]["state"] == "delivered"


async def test_a_passed_in_client_is_used_and_left_open(
    store: Store, receiver: Receiver, clock: Clock
) -> None:
    add_event(store, T0)
    async with httpx.AsyncClient(headers={"X-Custom": "1"}) as client:
        async with dispatcher(store, [target(receiver.url + "/hook")], clock, client=client) as d:
            assert await d.run_once() == 1
        assert not client.is_closed
    assert receiver.requests[0].headers["X-Custom"] == "1"
