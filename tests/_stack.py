"""A real ``warden serve`` stack on loopback for the API tests (a pytest plugin)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import SPEC

from warden.auth import KeyStore
from warden.server import ServerSettings, create_app
from warden.store import Store

TESTS = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    url: str
    store_url: str
    effects: str
    keys: dict[str, str]
    app: Any
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, who: str) -> httpx.Client:
        return self.client_for(self.keys[who])

    def client_for(self, key: str) -> httpx.Client:
        made = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self.clients.append(made)
        return made

    def close(self) -> None:
        for made in self.clients:
            made.close()

    def effect_count(self, kind: str) -> int:
        from server_tools import count_effects

        return count_effects(self.effects, kind)


def make_keys(store_url: str) -> dict[str, str]:
    store = Store(store_url)
    keys = KeyStore(store)
    made = {}
    bot: dict[str, Any] = {"agent": "bot"}
    # "approver" is the role of approvals in a spec that names none (SECRET_SPEC)
    lead: dict[str, Any] = {"approval_roles": ["lead", "approver"]}
    for who, role, tenant, binding in [
        ("root", "admin", "*", {}),
        ("acme-admin", "admin", "acme", lead),
        ("bot", "agent", "acme", bot),
        ("lead", "approver", "acme", lead),
        ("audit", "auditor", "acme", {}),
        ("other-bot", "agent", "globex", bot),
        ("other-lead", "approver", "globex", lead),
        ("other-audit", "auditor", "globex", {}),
    ]:
        made[who] = keys.create(
            name=who, role=role, tenant=tenant, created_by="tests", **binding
        )[1]
    store.dispose()
    return made


def write_spec(tmp: Path, spec: str = SPEC) -> Path:
    path = tmp / "shop.yaml"
    path.write_text(spec)
    return path


@pytest.fixture
def make_stack(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Stack]]:
    """Start a server on loopback with a given spec, tools and settings; stopped at teardown."""
    effects = tmp_path / "effects.db"
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(effects))
    running: list[tuple[Stack, uvicorn.Server, threading.Thread]] = []

    def start(spec: str = SPEC, tools: str = "tools", **overrides: Any) -> Stack:
        spec_path = tmp_path / f"spec{len(running)}.yaml"
        spec_path.write_text(spec)
        settings = ServerSettings(
            store=store_url,
            specs=[str(spec_path)],
            tools=[f"{TESTS / 'server_tools.py'}:{tools}"],
            auto_migrate=True,
            key_cache_s=0.2,
            max_body_bytes=64 * 1024,
            **overrides,
        )
        app = create_app(settings)
        keys = make_keys(store_url) if not running else running[0][0].keys
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.time() + 15
        while not server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        built = Stack(f"http://127.0.0.1:{port}", store_url, str(effects), keys, app)
        running.append((built, server, thread))
        return built

    yield start
    for built, server, thread in running:
        built.close()
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()
