"""An in-process server for tests that do not test the transport (``httpx.ASGITransport``),
lifespan included, with keys made on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SPEC

from warden.auth import KeyStore
from warden.server import ServerSettings, create_app

TESTS = Path(__file__).parent


@dataclass
class Api:
    app: Any
    keys: KeyStore
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def key(self, name: str, role: str, tenant: str = "acme", **binding: Any) -> str:
        made = self.keys.create(name=name, role=role, tenant=tenant, created_by="tests", **binding)
        return made[1]

    def client(self, key: str) -> httpx.AsyncClient:
        made = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://warden.test",
            headers={"Authorization": f"Bearer {key}"},
        )
        self.clients.append(made)
        return made

    def as_(self, name: str, role: str, tenant: str = "acme", **binding: Any) -> httpx.AsyncClient:
        return self.client(self.key(name, role, tenant, **binding))

    def flush(self) -> None:
        """Everything the gateways buffered, on the store."""
        for gateway in self.app.state.warden.gateways.values():
            gateway.flush()


@pytest.fixture
async def serve(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(tmp_path / "effects.db"))
    running: list[tuple[Api, Any]] = []

    async def start(*specs: str, **overrides: Any) -> Api:
        paths = []
        for i, spec in enumerate(specs or (SPEC,)):
            path = tmp_path / f"spec{len(running)}_{i}.yaml"
            path.write_text(spec)
            paths.append(str(path))
        settings = ServerSettings(
            store=store_url,
            specs=paths,
            tools=[f"{TESTS / 'server_tools.py'}:tools"] * len(paths),
            auto_migrate=True,
            key_cache_s=0.0,
            **overrides,
        )
        app = create_app(settings)
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


async def open_run(client: httpx.AsyncClient, agent: str = "bot", workflow: str = "shop") -> str:
    r = await client.post("/v1/runs", json={"workflow": workflow, "agent": agent, "task": "t"})
    assert r.status_code == 201, r.text
    run_id: str = r.json()["run_id"]
    return run_id


async def act(client: httpx.AsyncClient, run_id: str, tool: str, args: dict[str, Any]) -> Any:
    r = await client.post(f"/v1/runs/{run_id}/actions", json={"tool": tool, "args": args})
    assert r.status_code == 200, r.text
    return r.json()


def tools_of(tmp_path: Path, module: str, names: Sequence[str]) -> str:
    """A ``--tools`` reference to a factory returning ``names`` from test module ``module``."""
    path = tmp_path / "desk_tools.py"
    path.write_text(
        f"from {module} import {', '.join(names)}\n\n"
        f"def tools():\n    return [{', '.join(names)}]\n"
    )
    return f"{path}:tools"


@asynccontextmanager
async def running_app(
    store_url: str, tmp_path: Path, spec: str, tools: str, **overrides: Any
) -> AsyncIterator[Any]:
    """``create_app`` for one spec's text and a ``--tools`` reference, its lifespan entered
    (keys answer at once: ``key_cache_s`` 0 unless overridden)."""
    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    settings: dict[str, Any] = {"key_cache_s": 0.0, **overrides}
    app = create_app(
        ServerSettings(
            store=store_url, specs=[str(path)], tools=[tools], auto_migrate=True, **settings
        )
    )
    async with app.router.lifespan_context(app):
        yield app
