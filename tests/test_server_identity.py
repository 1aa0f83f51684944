"""Who a key is, on the HTTP control plane: agent binding, approval roles, the key cache.

Served in process through ``httpx.ASGITransport`` (the transport is not what is tested),
on SQLite and PostgreSQL. Issue 7, holes f (agent identity), g (approver roles, server
side) and j (unbounded key cache).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SPEC

from warden.auth import KeyStore
from warden.server import ServerSettings, create_app
from warden.store import Store

TESTS = Path(__file__).parent
PROBLEM = "application/problem+json"
PAY_300 = {"order_id": "o1", "customer_id": "c1", "amount": 300.0}
# A second workflow, for keys bound to workflows.
DEPOT = SPEC.replace("name: shop", "name: depot", 1)
# Approvals escalate from lead to manager after a second.
FAST_SLA = SPEC.replace("  sla: 15m\n", "  sla: 1s\n", 1)


@dataclass
class Api:
    """One in-process server and the keys made for it."""

    app: Any
    keys: KeyStore
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def key(self, name: str, role: str, tenant: str = "acme", **binding: Any) -> str:
        return self.keys.create(name=name, role=role, tenant=tenant, created_by="tests", **binding)[
            1
        ]

    def client(self, key: str, **headers: str) -> httpx.AsyncClient:
        made = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://warden.test",
            headers={"Authorization": f"Bearer {key}", **headers},
        )
        self.clients.append(made)
        return made

    def as_(self, name: str, role: str, tenant: str = "acme", **binding: Any) -> httpx.AsyncClient:
        return self.client(self.key(name, role, tenant, **binding))


@pytest.fixture
def make_api(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(tmp_path / "effects.db"))

    def build(*specs: str, **overrides: Any) -> Any:
        paths = []
        for i, spec in enumerate(specs or (SPEC,)):
            path = tmp_path / f"spec{i}.yaml"
            path.write_text(spec)
            paths.append(str(path))
        settings = ServerSettings(
            store=store_url,
            specs=paths,
            tools=[f"{TESTS / 'server_tools.py'}:tools"] * len(paths),
            auto_migrate=True,
            key_cache_s=0.0,
            sla_sweep_s=0.05,
            **overrides,
        )
        return create_app(settings)

    return build


@pytest.fixture
async def serve(make_api: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    """Start an app (lifespan included: the SLA sweeper runs); stopped at teardown."""
    running: list[tuple[Api, Any]] = []

    async def start(*specs: str, **overrides: Any) -> Api:
        app = make_api(*specs, **overrides)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        api = Api(app, KeyStore(app.state.warden.store, cache_s=0.0))
        running.append((api, lifespan))
        return api

    yield start
    for api, lifespan in running:
        for client in api.clients:
            await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def api(serve: Callable[..., Any]) -> Api:
    made: Api = await serve()
    return made


async def _open(client: httpx.AsyncClient, agent: str = "bot", workflow: str = "shop") -> str:
    r = await client.post("/v1/runs", json={"workflow": workflow, "agent": agent, "task": "t"})
    assert r.status_code == 201, r.text
    run_id: str = r.json()["run_id"]
    return run_id


async def _act(client: httpx.AsyncClient, run_id: str, tool: str, args: dict[str, Any]) -> Any:
    r = await client.post(f"/v1/runs/{run_id}/actions", json={"tool": tool, "args": args})
    assert r.status_code == 200, r.text
    return r.json()


def _forbidden(r: httpx.Response) -> str:
    """The detail of a 403 problem+json (asserted)."""
    assert (r.status_code, r.headers["content-type"], r.json()["type"].rsplit("/", 1)[-1]) == (
        403,
        PROBLEM,
        "forbidden",
    ), r.text
    detail: str = r.json()["detail"]
    return detail


# -- hole j: the key cache ------------------------------------------------------------


async def test_overlong_keys_are_refused_before_lookup_and_cost_no_memory(api: Api) -> None:
    client = api.client("placeholder")
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(60):
            fake = f"wdn_{i:06x}{'a' * 1_000_000}_secret"
            r = await client.get("/v1/runs", headers={"Authorization": f"Bearer {fake}"})
            assert (r.status_code, r.headers["content-type"]) == (401, PROBLEM)
        del fake, r
        gc.collect()  # requests and responses refer to each other: count only what is kept
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 5_000_000  # 60 ids of 1 MB each: nothing of them is kept


def test_key_cache_holds_at_most_max_cached_ids(store_url: str) -> None:
    store = Store(store_url)
    keys = KeyStore(store, max_cached=50)
    _, real = keys.create(name="real", role="auditor", tenant="acme", created_by="tests")
    for i in range(500):
        assert keys.verify(f"wdn_{i:016x}_made-up") is None
        assert keys.cached <= 50
    principal = keys.verify(real)
    assert principal is not None and principal.name == "real"
    store.dispose()
