"""Who a key is, on the HTTP control plane: agent binding, approval roles, the key cache.

Served in process through ``httpx.ASGITransport`` (the transport is not what is tested),
on SQLite and PostgreSQL. Issue 7, holes f (agent identity), g (approver roles, server
side) and j (unbounded key cache).
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SPEC
from sqlalchemy import create_engine, text

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
def make_api(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
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
    assert (r.status_code, r.headers["content-type"], r.json()["type"].rsplit(":", 1)[-1]) == (
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


# -- hole f: agent identity -----------------------------------------------------------


async def test_agent_key_opens_runs_only_as_its_agent(api: Api) -> None:
    bot = api.as_("bot", "agent", agent="bot")
    detail = _forbidden(
        await bot.post("/v1/runs", json={"workflow": "shop", "agent": "weak", "task": "t"})
    )
    assert "'bot'" in detail and "'weak'" in detail
    run = (await bot.get(f"/v1/runs/{await _open(bot)}")).json()
    assert (run["agent"], run["status"]) == ("bot", "running")


async def test_agent_key_bound_to_workflows_runs_only_those(serve: Callable[..., Any]) -> None:
    api = await serve(SPEC, DEPOT)
    shop_only = api.as_("shop-bot", "agent", agent="bot", workflows=["shop"])
    anywhere = api.as_("any-bot", "agent", agent="bot")
    await _open(shop_only, workflow="shop")
    _forbidden(
        await shop_only.post("/v1/runs", json={"workflow": "depot", "agent": "bot", "task": "t"})
    )
    await _open(anywhere, workflow="depot")


async def test_agent_key_acts_only_on_its_agents_runs(api: Api) -> None:
    """Runs of another agent answer 404, as runs of another tenant do: a key learns
    nothing of runs it may not act on, and takes none of their steps."""
    bot = api.as_("bot", "agent", agent="bot")
    weak = api.as_("weak-bot", "agent", agent="weak")
    theirs = await _open(weak, agent="weak")
    mine = await _open(bot)
    for r in [
        await bot.get(f"/v1/runs/{theirs}"),
        # a well-formed call (the fast path) and a malformed one (the FastAPI route)
        await bot.post(
            f"/v1/runs/{theirs}/actions", json={"tool": "get_doc", "args": {"doc_id": "d"}}
        ),
        await bot.post(
            f"/v1/runs/{theirs}/actions",
            content=b'{"tool": "get_doc", "args": {}}',
            headers={"content-type": "application/json; charset=utf-8"},
        ),
        await bot.post(f"/v1/runs/{theirs}/finish", json={"outcome": "completed"}),
        await bot.get(f"/v1/ledger/runs/{theirs}/events"),
    ]:
        assert (r.status_code, r.headers["content-type"]) == (404, PROBLEM), r.text
    listed = {r["run_id"] for r in (await bot.get("/v1/runs")).json()["items"]}
    assert (mine in listed, theirs in listed) == (True, False)
    # The other agent's run is untouched: still running, its first call is step 1.
    first = await _act(weak, theirs, "get_doc", {"doc_id": "d"})
    assert first["action_id"] == f"{theirs}.1"


async def test_agent_key_cannot_execute_another_agents_approval(api: Api) -> None:
    bot = api.as_("bot", "agent", agent="bot")
    other = api.as_("bot-2", "agent", agent="weak")
    lead = api.as_("lead", "approver", approval_roles=["lead"])
    run_id = await _open(bot)
    pending = await _act(bot, run_id, "pay", PAY_300)
    approval = pending["approval_id"]
    r = await lead.post(
        f"/v1/approvals/{approval}/decision", json={"decision": "approve", "rationale": "ok"}
    )
    assert r.status_code == 200, r.text
    for r in [
        await other.get(f"/v1/approvals/{approval}"),
        await other.post(f"/v1/approvals/{approval}/execute"),
    ]:
        assert (r.status_code, r.headers["content-type"]) == (404, PROBLEM), r.text
    assert (await other.get("/v1/approvals", params={"state": "approved"})).json()["items"] == []
    done = await bot.post(f"/v1/approvals/{approval}/execute")
    assert done.json()["status"] == "allowed", done.text


async def test_unbound_agent_key_is_refused_until_bound(api: Api, store_url: str) -> None:
    """A key made before keys were bound has no agent: it opens nothing (fail closed)
    and the answer says how to bind it; once bound, it works without a new secret."""
    key = api.key("legacy", "agent", agent="bot")
    key_id = key.split("_")[1]
    engine = create_engine(store_url)
    with engine.begin() as conn:  # what migration 0005 leaves on an older key
        conn.execute(text("UPDATE api_keys SET agent = NULL WHERE key_id = :k"), {"k": key_id})
    engine.dispose()
    legacy = api.client(key)
    detail = _forbidden(
        await legacy.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "t"})
    )
    assert "warden keys bind" in detail
    api.keys.bind(key_id, agent="bot")
    await _open(legacy)


async def test_keys_through_the_admin_api(api: Api) -> None:
    root = api.as_("root", "admin", tenant="*")
    acme_admin = api.as_("acme-admin", "admin")
    made = await acme_admin.post(
        "/v1/keys",
        json={"name": "refunds", "role": "agent", "agent": "bot", "workflows": ["shop"]},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["tenant"], body["agent"], body["workflows"]) == ("acme", "bot", ["shop"])
    bot = api.client(body["key"])
    await _open(bot)
    _forbidden(await bot.post("/v1/runs", json={"workflow": "shop", "agent": "weak", "task": "t"}))
    listed = (await acme_admin.get("/v1/keys")).json()["items"]
    assert {k["name"] for k in listed} >= {"refunds", "acme-admin"}
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    # An agent key needs its agent; a tenant admin makes keys for its tenant only.
    no_agent = await acme_admin.post("/v1/keys", json={"name": "x", "role": "agent"})
    assert (no_agent.status_code, no_agent.headers["content-type"]) == (422, PROBLEM)
    assert "--agent" in no_agent.json()["detail"] or "agent" in no_agent.json()["detail"]
    _forbidden(
        await acme_admin.post("/v1/keys", json={"name": "x", "role": "admin", "tenant": "*"})
    )
    _forbidden(
        await acme_admin.post(
            "/v1/keys", json={"name": "x", "role": "agent", "agent": "bot", "tenant": "globex"}
        )
    )
    _forbidden(await bot.post("/v1/keys", json={"name": "x", "role": "agent", "agent": "bot"}))
    other = await root.post(
        "/v1/keys",
        json={"name": "g-lead", "role": "approver", "tenant": "globex", "approval_roles": ["lead"]},
    )
    assert other.status_code == 201 and other.json()["approval_roles"] == ["lead"], other.text
    revoked = await acme_admin.post(f"/v1/keys/{body['key_id']}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert (await bot.get("/v1/runs")).status_code == 401
    # A key of another tenant is absent for a tenant admin.
    r = await acme_admin.post(f"/v1/keys/{other.json()['key_id']}/revoke")
    assert (r.status_code, r.headers["content-type"]) == (404, PROBLEM)


def _warden(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warden", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_keys_cli_binds_agent_and_roles(store_url: str, tmp_path: Path) -> None:
    Store(store_url).dispose()
    store = ["--store", store_url]
    refused = _warden(
        "keys", "create", "--role", "agent", "--name", "b", "--tenant", "acme", *store, cwd=tmp_path
    )
    assert refused.returncode != 0
    assert "--agent" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    made = _warden(
        "keys",
        "create",
        "--role",
        "agent",
        "--name",
        "b",
        "--tenant",
        "acme",
        "--agent",
        "refund-bot",
        "--workflow",
        "refund_triage",
        *store,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    lead = _warden(
        "keys",
        "create",
        "--role",
        "approver",
        "--name",
        "cfo-desk",
        "--tenant",
        "acme",
        "--approval-role",
        "lead",
        "--approval-role",
        "cfo",
        "--bridge",
        *store,
        cwd=tmp_path,
    )
    assert lead.returncode == 0, lead.stderr
    db = Store(store_url)
    keys = {k.name: k for k in KeyStore(db).list()}
    assert (keys["b"].agent, keys["b"].workflows) == ("refund-bot", ("refund_triage",))
    assert (keys["cfo-desk"].approval_roles, keys["cfo-desk"].bridge) == (("cfo", "lead"), True)
    bound = _warden(
        "keys", "bind", keys["cfo-desk"].key_id, "--approval-role", "manager", *store, cwd=tmp_path
    )
    assert bound.returncode == 0, bound.stderr
    assert KeyStore(db).get(keys["cfo-desk"].key_id).approval_roles == ("manager",)
    wrong = _warden("keys", "bind", keys["cfo-desk"].key_id, "--agent", "bot", *store, cwd=tmp_path)
    assert wrong.returncode != 0 and len(wrong.stderr.strip().splitlines()) == 1
    db.dispose()


# -- hole g: approval roles, separation of duties, bridges ------------------------------


async def _decide(
    client: httpx.AsyncClient, approval_id: str, decision: str = "approve", **extra: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/approvals/{approval_id}/decision",
        json={"decision": decision, "rationale": "checked", **extra},
    )


async def test_deciding_needs_the_approvals_current_role(serve: Callable[..., Any]) -> None:
    api = await serve(FAST_SLA)
    bot = api.as_("bot", "agent", agent="bot")
    lead = api.as_("lead", "approver", approval_roles=["lead"])
    manager = api.as_("manager", "approver", approval_roles=["manager"])
    no_roles = api.as_("anyone", "approver")
    admin = api.as_("acme-admin", "admin")  # admins hold no approval role unless given one
    pending = await _act(bot, await _open(bot), "pay", PAY_300)
    approval = pending["approval_id"]
    for who in (no_roles, manager, admin):
        assert "lead" in _forbidden(await _decide(who, approval))
        _forbidden(await _decide(who, approval, "reject"))
    # After the SLA passes the approval is routed to manager: lead no longer decides it.
    for _ in range(200):
        record = (await lead.get(f"/v1/approvals/{approval}")).json()
        if record["role"] == "manager":
            break
        await asyncio.sleep(0.05)
    assert record["role"] == "manager"
    assert "manager" in _forbidden(await _decide(lead, approval))
    decided = await _decide(manager, approval)
    assert decided.status_code == 200 and decided.json()["state"] == "approved", decided.text


async def test_admin_who_proposed_into_another_keys_run_cannot_approve(api: Api) -> None:
    bot = api.as_("bot", "agent", agent="bot")
    admin = api.as_("acme-admin", "admin", approval_roles=["lead"])
    lead = api.as_("lead", "approver", approval_roles=["lead"])
    run_id = await _open(bot)  # opened by the bot's key: the admin is not the opener
    pending = await _act(admin, run_id, "pay", PAY_300)
    own = await _decide(admin, pending["approval_id"])
    assert (own.status_code, own.headers["content-type"]) == (409, PROBLEM), own.text
    assert "separation of duties" in own.json()["detail"]
    decided = await _decide(lead, pending["approval_id"])
    assert decided.json()["decided_by"] == "key:lead", decided.text
    events = (await admin.get(f"/v1/ledger/runs/{run_id}/events")).json()["items"]
    requested = [e for e in events if e["type"] == "action_requested"]
    assert [e["payload"]["proposed_by"] for e in requested] == ["key:acme-admin"]


async def test_only_a_bridge_key_decides_on_behalf_of_someone(api: Api) -> None:
    bot = api.as_("bot", "agent", agent="bot")
    lead = api.as_("lead", "approver", approval_roles=["lead"])
    chat = api.as_("chat", "approver", approval_roles=["lead"], bridge=True)
    run_id = await _open(bot)
    first = (await _act(bot, run_id, "pay", PAY_300))["approval_id"]
    second = (await _act(bot, run_id, "pay", {**PAY_300, "amount": 200.0}))["approval_id"]
    _forbidden(await _decide(lead, first, on_behalf_of="alice@acme.example"))
    header = api.client(api.key("lead-2", "approver", approval_roles=["lead"]))
    _forbidden(
        await header.post(
            f"/v1/approvals/{first}/decision",
            json={"decision": "approve", "rationale": "x"},
            headers={"X-On-Behalf-Of": "alice@acme.example"},
        )
    )
    assert (await _decide(chat, first, on_behalf_of="alice@acme.example")).status_code == 200
    rejected = await chat.post(
        f"/v1/approvals/{second}/decision",
        json={"decision": "reject", "rationale": "no"},
        headers={"X-On-Behalf-Of": "bob@acme.example"},
    )
    assert rejected.status_code == 200, rejected.text
    events = (await lead.get(f"/v1/ledger/runs/{run_id}/events")).json()["items"]
    decided = [e["payload"] for e in events if e["type"] == "approval_decided"]
    # the ledger holds the people as their PII tokens (docs/pii.md)
    pii = api.app.state.warden.gateway("shop").svc.pii
    assert [(d["decision"], d.get("on_behalf_of")) for d in decided] == [
        ("approved", pii.redact_text("acme", "alice@acme.example")),
        ("rejected", pii.redact_text("acme", "bob@acme.example")),
    ]


def test_approvals_cli_decides_on_behalf_of_someone_with_a_bridge_key(
    make_stack: Callable[..., Any], tmp_path: Path
) -> None:
    """The terminal client of the queue over a real server: ``--on-behalf-of`` is taken
    from a bridge key and refused, in one line, from any other key."""
    stack = make_stack()
    db = Store(stack.store_url)
    chat = KeyStore(db).create(
        name="chat",
        role="approver",
        tenant="acme",
        created_by="tests",
        approval_roles=["lead"],
        bridge=True,
    )[1]
    db.dispose()
    bot = stack.client("bot")
    run_id = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "t"}).json()[
        "run_id"
    ]
    approval = bot.post(f"/v1/runs/{run_id}/actions", json={"tool": "pay", "args": PAY_300}).json()[
        "approval_id"
    ]

    def approve(key: str) -> subprocess.CompletedProcess[str]:
        return _warden(
            "approvals",
            "approve",
            approval,
            "--rationale",
            "ok",
            "--on-behalf-of",
            "ana",
            "--url",
            stack.url,
            "--api-key",
            key,
            cwd=tmp_path,
        )

    refused = approve(stack.keys["lead"])
    assert refused.returncode != 0 and "403" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    done = approve(chat)
    assert done.returncode == 0, done.stderr
    events = stack.client("audit").get(f"/v1/ledger/runs/{run_id}/events").json()["items"]
    decided = [e["payload"] for e in events if e["type"] == "approval_decided"]
    assert [(d["approver"], d.get("on_behalf_of")) for d in decided] == [("key:chat", "ana")]
