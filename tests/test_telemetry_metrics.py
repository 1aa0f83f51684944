"""Prometheus metrics (issue 10 §2): ``/metrics`` counts calls by workflow, tool, effect
and outcome, denials, approvals and errors, reads pending approvals and switches from the
store, says who may scrape, and adds up every worker of ``warden serve --workers 2``."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _stack import free_port
from conftest import SPEC
from prometheus_client.parser import text_string_to_metric_families
from test_server_identity import FAST_SLA, PAY_300, _act, _open

from warden.auth import KeyStore
from warden.server import ServerSettings, create_app

TESTS = Path(__file__).parent


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition: (name, labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and want <= ls)


class Server:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.keys = KeyStore(app.state.warden.store, cache_s=0.0)
        self.clients: list[httpx.AsyncClient] = []

    def client(self, key: str | None = None, host: str = "127.0.0.1") -> httpx.AsyncClient:
        made = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(host, 40000)),
            base_url="http://warden.test",
            headers={"Authorization": f"Bearer {key}"} if key else {},
        )
        self.clients.append(made)
        return made

    def key(self, name: str, role: str, tenant: str = "acme", **binding: Any) -> str:
        made = self.keys.create(name=name, role=role, tenant=tenant, created_by="t", **binding)
        return made[1]

    async def scrape(self) -> str:
        r = await self.client().get("/metrics")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain")
        return r.text


@pytest.fixture
async def serve(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(tmp_path / "effects.db"))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    running: list[tuple[Server, Any]] = []

    async def start(spec: str = SPEC, **overrides: Any) -> Server:
        path = tmp_path / f"spec{len(running)}.yaml"
        path.write_text(spec)
        settings = ServerSettings(
            store=store_url,
            specs=[str(path)],
            tools=[f"{TESTS / 'server_tools.py'}:tools"],
            auto_migrate=True,
            key_cache_s=0.0,
            **overrides,
        )
        app = create_app(settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        server = Server(app)
        running.append((server, lifespan))
        return server

    yield start
    for server, lifespan in running:
        for client in server.clients:
            await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_calls_denials_approvals_and_errors_are_counted(serve: Any) -> None:
    server = await serve()
    bot = server.client(server.key("bot", "agent", agent="bot"))
    run_id = await _open(bot)
    assert (await _act(bot, run_id, "get_order", {"order_id": "o1"}))["status"] == "allowed"
    assert (await _act(bot, run_id, "get_order", {"order_id": "o2"}))["status"] == "allowed"
    assert (await _act(bot, run_id, "remove", {"key": "k"}))["status"] == "denied"
    pending = await _act(bot, run_id, "pay", PAY_300)
    assert pending["status"] == "pending"
    assert (await _act(bot, run_id, "save", {"key": 1}))["status"] == "failed"
    assert (await _act(bot, run_id, "wire_money", {}))["status"] == "denied"

    text = await server.scrape()
    calls = "warden_calls_total"
    assert value(text, calls, workflow="shop", tool="get_order", effect="allow",
                 outcome="executed") == 2  # fmt: skip
    assert value(text, calls, tool="remove", effect="deny", outcome="denied") == 1
    assert value(text, calls, tool="pay", effect="require_approval", outcome="pending") == 1
    assert value(text, calls, tool="save", effect="none", outcome="failed") == 1
    assert value(text, "warden_denials_total", tool="remove", kind="policy_block") == 1
    assert value(text, "warden_denials_total", tool="wire_money", kind="unknown_tool") == 1
    assert value(text, "warden_failures_total", tool="save", kind="schema_error") == 1
    assert value(text, "warden_tool_errors_total") == 0  # a schema error is not the tool's
    assert value(text, "warden_approvals_requested_total", workflow="shop", role="lead") == 1
    assert value(text, "warden_approvals_pending", workflow="shop", role="lead") == 1
    assert value(text, "warden_approvals_sla_breached", workflow="shop") == 0
    assert value(text, "warden_runs_started_total", workflow="shop") == 1
    assert "tenant" not in {k for (_, ls) in samples(text) for k, _ in ls}
    # every call is timed as a whole ("other": the stages not timed one by one); the
    # reads reached execute, the denials and the failure did not
    assert value(text, "warden_stage_duration_seconds_count", stage="other") == 6
    assert value(text, "warden_stage_duration_seconds_count", stage="execute") == 2
    assert value(text, "warden_tool_call_duration_seconds_count", tool="get_order") == 2
    assert value(text, "warden_call_duration_seconds_count", workflow="shop") == 6

    lead = server.client(server.key("lead", "approver", approval_roles=["lead"]))
    decided = await lead.post(
        f"/v1/approvals/{pending['approval_id']}/decision",
        json={"decision": "approve", "rationale": "ok"},
    )
    assert decided.status_code == 200, decided.text
    text = await server.scrape()
    assert value(text, "warden_approvals_decided_total", decision="approved") == 1
    assert value(text, "warden_approvals_pending", workflow="shop") == 0


async def test_tool_errors_and_the_circuit(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPEC.replace("  nap: {effect: read, scope: read}\n",
                        "  nap: {effect: read, scope: read, timeout: 0.05, "
                        "circuit: {failure_threshold: 2, reset_after: 1h}}\n")  # fmt: skip
    server = await serve(spec)
    bot = server.client(server.key("bot", "agent", agent="bot"))
    run_id = await _open(bot)
    kinds = [(await _act(bot, run_id, "nap", {"seconds": 1.0 + i}))["kind"] for i in range(3)]
    assert kinds == ["timeout", "timeout", "circuit_open"]
    text = await server.scrape()
    assert value(text, "warden_tool_errors_total", tool="nap") == 3
    assert value(text, "warden_tool_errors_total", tool="nap", kind="circuit_open") == 1
    assert value(text, "warden_circuit_open", workflow="shop", tool="nap") == 1


async def test_pending_approvals_age_and_sla_breach_are_read_from_the_store(serve: Any) -> None:
    server = await serve(FAST_SLA, sla_sweep_s=3600)  # nothing applies the timeout
    bot = server.client(server.key("bot", "agent", agent="bot"))
    root = server.client(server.key("root", "admin", tenant="*"))
    run_id = await _open(bot)
    assert (await _act(bot, run_id, "pay", PAY_300))["status"] == "pending"
    on = {"scope": "tool", "target": "save", "active": True, "reason": "incident"}
    assert (await root.post("/v1/switches", json=on)).status_code in (200, 201)
    await asyncio.sleep(1.2)  # past the 1 s deadline
    text = await server.scrape()
    assert value(text, "warden_approvals_sla_breached", workflow="shop") == 1
    assert value(text, "warden_approvals_oldest_pending_age_seconds", workflow="shop") >= 1.0
    assert value(text, "warden_switches_active", scope="tool") == 1


async def test_who_may_scrape(serve: Any) -> None:
    server = await serve()
    agent, auditor = server.key("bot", "agent", agent="bot"), server.key("audit", "auditor")
    assert (await server.client(host="127.0.0.1").get("/metrics")).status_code == 200
    remote = "10.1.2.3"
    r = await server.client(host=remote).get("/metrics")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert (await server.client(agent, host=remote).get("/metrics")).status_code == 403
    assert (await server.client(auditor, host=remote).get("/metrics")).status_code == 200

    keyed = await serve(metrics_access="key")
    assert (await keyed.client(host="127.0.0.1").get("/metrics")).status_code == 401
    open_ = await serve(metrics_access="open")
    assert (await open_.client(host=remote).get("/metrics")).status_code == 200
    off = await serve(metrics=False)
    assert (await off.client().get("/metrics")).status_code == 404


async def test_tenant_is_a_label_only_when_the_operator_enables_it(serve: Any) -> None:
    server = await serve(metrics_tenant_label=True)
    bot = server.client(server.key("bot", "agent", agent="bot"))
    run_id = await _open(bot)
    await _act(bot, run_id, "get_order", {"order_id": "o1"})
    text = await server.scrape()
    assert value(text, "warden_calls_total", tenant="acme", tool="get_order") == 1


# -- warden serve --workers 2 ----------------------------------------------------------


def _per_worker_calls(directory: Path) -> dict[str, float]:
    """Calls counted by each worker (its own counter file), read with prometheus-client."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    out = {}
    for path in directory.glob("counter_*.db"):
        alone = directory / "alone" / path.stem
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        total = sum(
            s.value
            for family in registry.collect()
            for s in family.samples
            if s.name == "warden_calls_total"
        )
        out[path.stem] = total
    return out


def test_metrics_add_up_the_calls_of_every_worker(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # cleaned at start
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    store = f"sqlite:///{tmp_path / 'w.db'}"
    server = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port), "--workers", "2",
         "--store", store, "--migrate"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.1)
        made = subprocess.run(
            [sys.executable, "-m", "warden", "keys", "create", "--role", "agent", "--name",
             "bot", "--tenant", "acme", "--agent", "refund-bot", "--store", store],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        headers = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
        sent = runs = 0
        # A new connection per call: the kernel hands each to whichever worker accepts.
        while len([n for n in _per_worker_calls(metrics_dir).values() if n]) < 2:
            assert sent < 400, _per_worker_calls(metrics_dir)
            opened = httpx.post(
                url + "/v1/runs",
                json={"workflow": "refund_triage", "agent": "refund-bot", "task": "t"},
                headers=headers,
            )
            assert opened.status_code == 201, opened.text
            runs += 1
            for i in range(10):
                r = httpx.post(
                    f"{url}/v1/runs/{opened.json()['run_id']}/actions",
                    json={"tool": "get_ticket", "args": {"ticket_id": f"tkt_0000{i}"}},
                    headers={**headers, "Connection": "close"},
                )
                assert r.status_code == 200, r.text
                sent += 1
        # each worker counts its calls within half a second (off the calls' path)
        deadline = time.monotonic() + 10
        while sum(_per_worker_calls(metrics_dir).values()) < sent:
            assert time.monotonic() < deadline, _per_worker_calls(metrics_dir)
            time.sleep(0.1)
        assert sum(_per_worker_calls(metrics_dir).values()) == sent
        for _ in range(4):  # whichever worker answers, it reports every worker's calls
            text = httpx.get(url + "/metrics", headers={"Connection": "close"}).text
            assert value(text, "warden_calls_total", tool="get_ticket") == sent
            assert value(text, "warden_runs_started_total", workflow="refund_triage") == runs
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    assert not (metrics_dir / "counter_999999.db").exists()
