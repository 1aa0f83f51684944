"""The replica registry: which processes serve a store, and which switches each has read.

Two real ``warden serve`` processes on one store (SQLite and PostgreSQL): a switch flipped
through one is reported as seen by both; a replica that dies drops out of "live" after the
window. Over ASGI: ``GET /v1/replicas`` (roles, paging), ``seen_by`` / ``waiting_for`` on
``GET /v1/switches`` and the console's switches page, with heartbeats written by this test
standing in for other processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from _stack import free_port, make_keys, write_spec
from fastapi import FastAPI
from sqlalchemy import insert, select

from warden.pipeline._replicas import Heartbeat, list_replicas
from warden.server import ServerSettings, create_app
from warden.store import Store
from warden.store._tables import replicas

TESTS = Path(__file__).parent
BASE = "http://warden.test"


# -- two real replicas --------------------------------------------------------------------


def _serve(store_url: str, spec: Path, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "warden", "serve", "--port", str(port), "--store", store_url,
            "--spec", str(spec), "--tools", f"{TESTS / 'server_tools.py'}:tools", "--migrate",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until(what: Callable[[], Any], seconds: float = 15.0) -> Any:
    """Poll ``what`` until it answers something truthy; its last answer otherwise."""
    deadline = time.monotonic() + seconds
    while True:
        found = what()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.fixture
def two_replicas(store_url: str, tmp_path: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[str]], str]]:
    Store(store_url).dispose()  # the schema, before two processes race to make it
    root = make_keys(store_url)["root"]
    env = {
        **os.environ,
        "WARDEN_TEST_EFFECTS": str(tmp_path / "effects.db"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "WARDEN_SWITCH_REFRESH_S": "0.25",
        "WARDEN_REPLICA_LIVE_S": "3",
    }
    spec = write_spec(tmp_path)
    ports = [free_port(), free_port()]
    procs = [_serve(store_url, spec, port, env) for port in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            def ready(url: str = url, proc: subprocess.Popen[str] = proc) -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read() if proc.stderr else "exited")
                try:
                    return httpx.get(url + "/readyz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            assert _until(ready, 30)
        yield urls, procs, root
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def _get(url: str, key: str, path: str) -> Any:
    r = httpx.get(url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _pids(url: str, key: str, query: str = "") -> list[int]:
    return sorted(r["pid"] for r in _get(url, key, "/v1/replicas" + query)["items"])


def test_a_switch_flipped_through_one_replica_is_seen_by_both(
    two_replicas: tuple[list[str], list[subprocess.Popen[str]], str],
) -> None:
    urls, procs, root = two_replicas
    pids = {p.pid for p in procs}
    assert _until(lambda: set(_pids(urls[1], root, "?live=true")) == pids)
    flipped = httpx.post(
        urls[0] + "/v1/switches",
        json={"scope": "tool", "target": "pay", "active": True, "reason": "incident 7"},
        headers={"Authorization": f"Bearer {root}"},
    )
    assert flipped.status_code == 200, flipped.text

    def seen_by() -> set[int]:
        [switch] = _get(urls[1], root, "/v1/switches")["items"]
        return {r["pid"] for r in switch["seen_by"]}

    assert _until(lambda: seen_by() == pids, 10)
    [switch] = _get(urls[0], root, "/v1/switches")["items"]
    assert switch["waiting_for"] == []


def test_a_replica_that_dies_drops_out_of_live_after_the_window(
    two_replicas: tuple[list[str], list[subprocess.Popen[str]], str],
) -> None:
    urls, procs, root = two_replicas
    pids = {p.pid for p in procs}
    assert _until(lambda: set(_pids(urls[0], root, "?live=true")) == pids)
    procs[1].kill()  # no clean stop: its row stays until it ages out
    procs[1].communicate(timeout=30)
    assert _until(lambda: _pids(urls[0], root, "?live=true") == [procs[0].pid], 10)
    assert _pids(urls[0], root, "?live=false") == [procs[1].pid]


def test_a_replica_stopped_cleanly_leaves_the_registry(
    two_replicas: tuple[list[str], list[subprocess.Popen[str]], str], store_url: str
) -> None:
    urls, procs, root = two_replicas
    pids = {p.pid for p in procs}
    assert _until(lambda: set(_pids(urls[0], root)) == pids)
    procs[1].send_signal(signal.SIGTERM)
    procs[1].communicate(timeout=30)
    store = Store(store_url)
    try:
        assert [r.pid for r in list_replicas(store)] == [procs[0].pid]
    finally:
        store.dispose()


# -- the API and the page, over ASGI --------------------------------------------------------


class World:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.store: Store = app.state.warden.store
        keys = app.state.warden.keys
        self.keys = {
            name: keys.create(name=name, role=role, tenant=tenant, created_by="test")[1]
            for name, role, tenant in [
                ("root", "admin", "*"),
                ("acme-admin", "admin", "acme"),
                ("audit", "auditor", "acme"),
                ("rival-audit", "auditor", "globex"),
                ("lead", "approver", "acme"),
            ]
        }
        self.clients: list[httpx.AsyncClient] = []

    def client(self, who: str) -> httpx.AsyncClient:
        made = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url=BASE,
            headers={"Authorization": f"Bearer {self.keys[who]}"},
        )
        self.clients.append(made)
        return made

    async def browser(self, who: str) -> httpx.AsyncClient:
        made = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)
        self.clients.append(made)
        form = await made.get("/ui/signin")
        signed = await made.post(
            "/ui/signin",
            data={"csrf": _csrf(form.text), "key": self.keys[who], "next": "/ui/switches"},
        )
        assert signed.status_code == 303, signed.text
        return made


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:300]
    return found[1]


@pytest.fixture
async def world(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    monkeypatch.chdir(tmp_path)  # the demo helpdesk is seeded under ./.warden
    app = create_app(
        ServerSettings(store=store_url, auto_migrate=True, fast_path=False, replica_live_s=5)
    )
    made = World(app)
    yield made
    for c in made.clients:
        await c.aclose()
    app.state.warden.close()


async def test_replicas_are_listed_for_admins_and_auditors_only(world: World) -> None:
    Heartbeat(world.store, "serve").beat(datetime.now(UTC))
    for who in ("root", "acme-admin", "audit", "rival-audit"):
        r = await world.client(who).get("/v1/replicas")
        assert r.status_code == 200, (who, r.text)
    refused = await world.client("lead").get("/v1/replicas")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"


async def test_replicas_page_through_a_cursor_and_say_which_are_live(world: World) -> None:
    for _ in range(3):
        Heartbeat(world.store, "serve").beat(datetime.now(UTC))
    with world.store.write() as conn:
        old = datetime.now(UTC) - timedelta(minutes=1)
        conn.execute(
            insert(replicas).values(
                replica_id="gone", kind="sdk", host="elsewhere", pid=1, version="0",
                started_at=old, last_seen_at=old, switches_read_at=old,
            )
        )
    audit = world.client("audit")
    first = (await audit.get("/v1/replicas", params={"limit": 2})).json()
    rest = (await audit.get("/v1/replicas", params={"limit": 2, "after": first["next"]})).json()
    assert len(first["items"] + rest["items"]) == 4
    assert rest["next"] is None
    dead = (await audit.get("/v1/replicas", params={"live": "false"})).json()["items"]
    assert [r["replica_id"] for r in dead] == ["gone"]
    bad = await audit.get("/v1/replicas", params={"after": "nonsense"})
    assert bad.status_code == 422


async def test_rows_unseen_for_an_hour_are_pruned_by_a_heartbeat(world: World) -> None:
    with world.store.write() as conn:
        old = datetime.now(UTC) - timedelta(hours=2)
        conn.execute(
            insert(replicas).values(
                replica_id="ancient", kind="serve", host="h", pid=1, version="0",
                started_at=old, last_seen_at=old, switches_read_at=None,
            )
        )
    beat = Heartbeat(world.store, "serve")
    beat.beat(None)
    with world.store.read() as conn:
        left = conn.execute(select(replicas.c.replica_id)).scalars().all()
    assert left == [beat.replica_id]


async def test_a_switch_says_which_live_replicas_have_read_it(world: World) -> None:
    early, late = Heartbeat(world.store, "serve"), Heartbeat(world.store, "serve")
    root = world.client("root")
    r = await root.post(
        "/v1/switches", json={"scope": "tool", "target": "issue_refund", "active": True, "reason": "x"}
    )
    set_at = datetime.fromisoformat(r.json()["set_at"])
    early.beat(set_at - timedelta(seconds=1))  # read before the change
    late.beat(set_at + timedelta(seconds=1))
    [switch] = (await root.get("/v1/switches")).json()["items"]
    assert [s["replica_id"] for s in switch["seen_by"]] == [late.replica_id]
    assert [w["replica_id"] for w in switch["waiting_for"]] == [early.replica_id]


async def test_a_read_begun_just_before_the_commit_does_not_count_as_seen(world: World) -> None:
    beat = Heartbeat(world.store, "serve")
    root = world.client("root")
    r = await root.post(
        "/v1/switches", json={"scope": "global", "active": True, "reason": "x"}
    )
    beat.beat(datetime.fromisoformat(r.json()["set_at"]) + timedelta(milliseconds=10))
    [switch] = (await root.get("/v1/switches")).json()["items"]
    assert [w["replica_id"] for w in switch["waiting_for"]] == [beat.replica_id]


async def test_the_switches_page_follows_a_flip_until_every_live_replica_has_seen_it(
    world: World,
) -> None:
    beat = Heartbeat(world.store, "serve")
    beat.beat(datetime.now(UTC))
    root = await world.browser("root")
    csrf = _csrf((await root.get("/ui/switches")).text)
    form = {"csrf": csrf, "scope": "workflow", "target": "refund_triage", "active": "on",
            "reason": "incident 9", "confirm": "yes"}
    done = await root.post("/ui/switches", data=form)
    assert done.status_code == 200
    label = f"{beat.host}:{beat.pid}"
    assert f"waiting for {label}" in done.text
    assert 'hx-trigger="every 1s"' in done.text
    assert 'href="/ui/switches?scope=workflow&amp;target=refund_triage"' in done.text
    [switch] = world.app.state.warden.switches.list()
    beat.beat(switch.set_at + timedelta(seconds=1), force=True)
    block = await root.get("/ui/switches/seen", params={"scope": "workflow", "target": "refund_triage"})
    assert "seen by 1 of 1 live replica" in block.text
    assert "hx-trigger" not in block.text  # polling stops
    page = await root.get("/ui/switches", params={"scope": "workflow", "target": "refund_triage"})
    assert "seen by 1 of 1 live replica" in page.text


async def test_a_global_switch_is_followed_too(world: World) -> None:
    beat = Heartbeat(world.store, "serve")
    beat.beat(datetime.now(UTC))
    root = await world.browser("root")
    csrf = _csrf((await root.get("/ui/switches")).text)
    form = {"csrf": csrf, "scope": "global", "target": "", "active": "on",
            "reason": "all stop", "confirm": "yes"}
    done = await root.post("/ui/switches", data=form)
    assert 'hx-get="/ui/switches/seen?scope=global"' in done.text
    block = await root.get("/ui/switches/seen", params={"scope": "global"})
    assert f"waiting for {beat.host}:{beat.pid}" in block.text


async def test_a_foreign_tenants_key_sees_no_seen_status_of_anothers_switch(world: World) -> None:
    Heartbeat(world.store, "serve").beat(datetime.now(UTC))
    acme = await world.browser("acme-admin")
    csrf = _csrf((await acme.get("/ui/switches")).text)
    form = {"csrf": csrf, "scope": "tenant", "target": "acme", "active": "on",
            "reason": "acme only", "confirm": "yes"}
    assert (await acme.post("/ui/switches", data=form)).status_code == 200
    rival = await world.browser("rival-audit")
    block = await rival.get("/ui/switches/seen", params={"scope": "tenant", "target": "acme"})
    assert block.status_code == 404
    page = await rival.get("/ui/switches")
    assert "acme only" not in page.text


async def test_an_approver_reads_seen_counts_but_not_the_replica_list(world: World) -> None:
    beat = Heartbeat(world.store, "serve")
    beat.beat(datetime.now(UTC))
    lead = await world.browser("lead")
    page = await lead.get("/ui/switches")
    assert page.status_code == 200
    assert f"{beat.host}:{beat.pid} (serve)" not in page.text


# -- the CLI ------------------------------------------------------------------------------


def _warden(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "warden", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_the_cli_lists_replicas_and_who_has_read_each_switch(
    store_url: str, tmp_path: Path
) -> None:
    store = Store(store_url)
    try:
        early, late = Heartbeat(store, "serve"), Heartbeat(store, "sdk")
        on = _warden(
            "switch", "on", "tool", "pay", "--by", "ops", "--reason", "x", "--store", store_url,
            cwd=tmp_path,
        )
        assert on.returncode == 0, on.stderr
        with store.read() as conn:
            set_at = conn.execute(select(replicas.c.replica_id)).first()
        early.beat(datetime.now(UTC) - timedelta(minutes=1))
        late.beat(datetime.now(UTC) + timedelta(seconds=1))
    finally:
        store.dispose()
    assert set_at is None  # nothing registered by the CLI itself
    listed = _warden("replicas", "--json", "--store", store_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert sorted((r["kind"], r["live"]) for r in found["items"]) == [("sdk", True), ("serve", True)]
    switches = _warden("switch", "list", "--store", store_url, cwd=tmp_path)
    assert f"waiting for {early.host}:{early.pid}" in switches.stdout
