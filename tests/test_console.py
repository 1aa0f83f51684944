"""The operator console's HTML routes (/ui) over ASGI: sign-in, CSRF, scoping, decisions.

Each page reuses the /v1 routes with the signed-in key, so these tests check what a user of
the console relies on: a key sees and does in the console exactly what it may through the
API, a form posted from anywhere else is refused, and decisions are recorded one by one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from _console_seed import large_refund_tickets, refund_run
from fastapi import FastAPI

from warden.server import ServerSettings, create_app

BASE = "http://warden.test"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found[1]


class Browser:
    """A console user: cookies kept across requests, like a browser's."""

    def __init__(self, app: FastAPI, base: str = BASE) -> None:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)
        self.csrf = ""

    async def sign_in(self, key: str) -> httpx.Response:
        form = await self.http.get("/ui/signin")
        answer = await self.http.post(
            "/ui/signin", data={"csrf": csrf_of(form.text), "key": key, "next": "/ui/approvals"}
        )
        if answer.status_code == 303:
            self.csrf = csrf_of((await self.http.get("/ui/approvals")).text)
        return answer

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.get(path, **kw)

    async def post(self, path: str, data: dict[str, Any], csrf: bool = True) -> httpx.Response:
        return await self.http.post(path, data={"csrf": self.csrf, **data} if csrf else data)


class World:
    def __init__(self, app: FastAPI, tmp: Path) -> None:
        self.app = app
        self.tmp = tmp
        keys = app.state.warden.keys
        self.keys: dict[str, str] = {}
        for name, role, tenant, extra in [
            ("bot", "agent", "acme", {"agent": "refund-bot"}),
            ("root", "admin", "*", {"approval_roles": ["support_lead"]}),
            ("lead", "approver", "acme", {"approval_roles": ["support_lead"]}),
            ("rival", "approver", "globex", {"approval_roles": ["support_lead"]}),
            ("rival-admin", "admin", "globex", {"approval_roles": ["support_lead"]}),
            ("audit", "auditor", "acme", {}),
        ]:
            self.keys[name] = keys.create(
                name=name, role=role, tenant=tenant, created_by="test", **extra
            )[1]
        self.agent = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=BASE,
            headers={"Authorization": "Bearer " + self.keys["bot"]},
        )
        self.browsers: list[Browser] = []

    async def pending(self, n: int) -> list[dict[str, Any]]:
        tickets = large_refund_tickets(self.tmp)
        made = [await refund_run(self.agent, t) for t in tickets[:n]]
        assert all(m["status"] == "pending" for m in made)
        return made

    async def user(self, name: str, base: str = BASE) -> Browser:
        browser = Browser(self.app, base)
        self.browsers.append(browser)
        answer = await browser.sign_in(self.keys[name])
        assert answer.status_code == 303, answer.text
        return browser

    async def approval(self, approval_id: str) -> dict[str, Any]:
        r = await self.agent.get(f"/v1/approvals/{approval_id}")
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found


@asynccontextmanager
async def opened_world(store_url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[World]:
    """A ``World`` on a fresh app (run from ``tmp_path``: the demo helpdesk is seeded under
    ./.warden), closed with its clients afterwards."""
    made = World(create_app(ServerSettings(store=store_url, auto_migrate=True, **settings)), tmp_path)
    try:
        yield made
    finally:
        for browser in made.browsers:
            await browser.http.aclose()
        await made.agent.aclose()
        made.app.state.warden.close()


@pytest.fixture
async def world(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    monkeypatch.chdir(tmp_path)
    async with opened_world(store_url, tmp_path, fast_path=False) as made:
        yield made


# -- sign-in, sessions, CSRF -----------------------------------------------------------------


async def test_pages_need_a_session_and_a_valid_key(world: World) -> None:
    anonymous = Browser(world.app)
    world.browsers.append(anonymous)
    for path in ["/ui/approvals", "/ui/runs", "/ui/switches", "/ui/ledger", "/ui/costs"]:
        r = await anonymous.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin?next=")
        # The sign-in page reads ``next`` itself (the API's 422 for unknown query
        # parameters is not the console's)
        signin = await anonymous.get(r.headers["location"])
        assert signin.status_code == 200, signin.text[:300]
        assert 'name="key"' in signin.text
    bad = await anonymous.sign_in("wdn_0123_notakey")
    assert bad.status_code == 401
    assert "unknown, revoked or expired" in bad.text
    assert "warden_session" not in anonymous.http.cookies
    # An API key in a header does not open the console: the console has its own session.
    header = await world.agent.get("/ui/approvals")
    assert header.status_code == 303


async def test_the_session_cookie_is_httponly_strict_and_secure_on_tls(world: World) -> None:
    for base, secure in [(BASE, False), ("https://warden.test", True)]:
        browser = Browser(world.app, base)
        world.browsers.append(browser)
        answer = await browser.sign_in(world.keys["lead"])
        cookie = next(
            h for h in answer.headers.get_list("set-cookie") if h.startswith("warden_session=")
        )
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path"} <= attrs
        assert "samesite=strict" in cookie.lower() and "path=/ui" in cookie.lower()
        assert ("secure" in attrs) is secure
        assert world.keys["lead"] not in cookie  # the key itself is never in the cookie


async def test_sign_out_ends_the_session_and_a_revoked_key_ends_it_too(world: World) -> None:
    lead = await world.user("lead")
    stolen = dict(lead.http.cookies)
    r = await lead.post("/ui/signout", {})
    assert r.status_code == 303
    replay = Browser(world.app)
    world.browsers.append(replay)
    replay.http.cookies.update(stolen)
    assert (await replay.get("/ui/approvals")).status_code == 303

    root = await world.user("root")
    keys = world.app.state.warden.keys
    info = next(k for k in keys.list() if k.name == "root")
    keys.revoke(info.key_id)
    assert (await root.get("/ui/approvals")).status_code == 303


async def test_processes_sharing_the_console_secret_share_sign_ins(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    apps = [
        create_app(ServerSettings(store=store_url, auto_migrate=True, ui_secret=secret))
        for secret in ["s" * 32, "s" * 32, "t" * 32]
    ]
    try:
        key = apps[0].state.warden.keys.create(
            name="lead", role="approver", tenant="acme", created_by="test"
        )[1]
        first, same, other = (Browser(app) for app in apps)
        assert (await first.sign_in(key)).status_code == 303
        for browser in (same, other):
            browser.http.cookies.update(dict(first.http.cookies))
        assert (await same.get("/ui/approvals")).status_code == 200
        assert (await other.get("/ui/approvals")).status_code == 303  # another secret
        for browser in (first, same, other):
            await browser.http.aclose()
    finally:
        for app in apps:
            app.state.warden.close()


def test_serve_refuses_a_short_console_secret_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "warden", "serve", "--port", "1"],
        cwd=tmp_path,
        env={**os.environ, "WARDEN_UI_SECRET": "short"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error WARDEN_UI_SECRET: String should have at least 16 characters"
    ]


def test_a_session_cookie_cannot_be_altered_or_outlive_its_expiry() -> None:
    from warden.server.ui._session import SESSION_S, Sessions

    signer = Sessions("k" * 32)
    cookie, session = signer.issue("key1", now=1000.0)
    assert signer.read(cookie, now=1000.0 + SESSION_S - 1) == session
    assert signer.read(cookie, now=1000.0 + SESSION_S) is None
    body, mac = cookie.split(".")
    forged, _ = Sessions("x" * 32).issue("admin", now=1000.0)
    for bad in [forged.split(".")[0] + "." + mac, body + "." + mac[:-2] + "AA", body, "", "a.b.c"]:
        assert signer.read(bad, now=1001.0) is None
    signer.end(session, now=1001.0)
    assert signer.read(cookie, now=1001.0) is None


async def test_every_post_needs_the_sessions_csrf_token(world: World) -> None:
    [made] = await world.pending(1)
    lead = await world.user("lead")
    other = await world.user("root")
    decide = f"/ui/approvals/{made['approval_id']}/decide"
    form = {"decision": "approve", "rationale": "ok"}
    missing = await lead.post(decide, form, csrf=False)
    foreign = await lead.http.post(decide, data={**form, "csrf": other.csrf})
    assert missing.status_code == 403 and foreign.status_code == 403
    assert "CSRF" in missing.text
    for path in ["/ui/approvals/batch", "/ui/switches", "/ui/signout"]:
        assert (await lead.post(path, {"decision": "approve"}, csrf=False)).status_code == 403
    assert (await world.approval(made["approval_id"]))["state"] == "pending"
    # The sign-in form needs the token of its own pre-session cookie.
    fresh = Browser(world.app)
    world.browsers.append(fresh)
    r = await fresh.http.post("/ui/signin", data={"key": world.keys["lead"], "csrf": "x"})
    assert r.status_code == 403 and "warden_session" not in fresh.http.cookies


async def test_forms_of_another_encoding_and_open_redirects_are_refused(world: World) -> None:
    lead = await world.user("lead")
    r = await lead.http.post("/ui/switches", json={"csrf": lead.csrf})
    assert r.status_code == 415
    browser = Browser(world.app)
    world.browsers.append(browser)
    form = await browser.get("/ui/signin")
    r = await browser.http.post(
        "/ui/signin",
        data={"csrf": csrf_of(form.text), "key": world.keys["lead"], "next": "//evil.example/x"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/approvals"


# -- the approval queue ----------------------------------------------------------------------


async def test_queue_lists_soonest_deadline_first_with_evidence(world: World) -> None:
    made = await world.pending(3)
    lead = await world.user("lead")
    page = (await lead.get("/ui/approvals")).text
    listed = re.findall(r'data-id="(apr_[0-9a-f]+)"', page)
    assert listed == [m["approval_id"] for m in made]  # same SLA: oldest is due first
    assert "data-deadline" in page and "refund_over_100_needs_approval" in page
    detail = (await lead.get(f"/ui/approvals/{made[0]['approval_id']}")).text
    # The untrusted arguments are marked; the facts, windows and earlier steps are shown.
    assert re.search(r'<tr class="untrusted">\s*<th scope="row"><code>amount</code>', detail)
    assert "facts.order" in detail and "window.refunds_per_customer_24h" in detail
    assert "get_ticket.requested_amount" in detail
    assert detail.count("<td><code>lookup_order</code></td>") == 1  # an earlier step


async def test_approve_records_the_decision_with_who_and_why(world: World) -> None:
    [made] = await world.pending(1)
    lead = await world.user("lead")
    r = await lead.post(
        f"/ui/approvals/{made['approval_id']}/decide",
        {"decision": "approve", "rationale": "matches the order"},
    )
    assert r.status_code == 303 and "approved" in r.headers["location"]
    record = await world.approval(made["approval_id"])
    assert record["state"] == "approved" and record["decided_by"] == "key:lead"
    assert record["rationale"] == "matches the order"


async def test_edited_args_are_checked_against_the_schema_next_to_the_field(world: World) -> None:
    [made] = await world.pending(1)
    lead = await world.user("lead")
    decide = f"/ui/approvals/{made['approval_id']}/decide"
    bad = await lead.post(decide, {"decision": "edit", "rationale": "less", "arg.amount": "a lot"})
    assert bad.status_code == 422
    assert re.search(r'id="arg-amount" name="arg.amount" value="a lot"[^>]*aria-invalid="true"', bad.text)
    assert re.search(r'id="arg-amount-error"[^>]*>[^<]*valid number', bad.text)
    assert (await world.approval(made["approval_id"]))["state"] == "pending"
    no_why = await lead.post(decide, {"decision": "approve", "rationale": " "})
    assert no_why.status_code == 422 and 'id="rationale-error"' in no_why.text
    good = await lead.post(decide, {"decision": "edit", "rationale": "less", "arg.amount": "99.5"})
    assert good.status_code == 303
    record = await world.approval(made["approval_id"])
    assert record["state"] == "approved" and record["args"]["amount"] == 99.5


async def test_edited_args_are_checked_as_they_are_typed(world: World) -> None:
    [made] = await world.pending(1)
    lead = await world.user("lead")
    check = f"/ui/approvals/{made['approval_id']}/check?field=amount"
    bad = await lead.post(check, {"arg.amount": "a lot"})
    assert bad.status_code == 200
    assert re.fullmatch(r'<p class="field-error" id="arg-amount-error"[^>]*>[^<]*valid number[^<]*</p>\s*', bad.text)
    good = await lead.post(check, {"arg.amount": "12.5"})
    assert re.fullmatch(r'<p class="field-error" id="arg-amount-error"[^>]*></p>\s*', good.text)
    assert (await lead.post(check, {"arg.amount": "1"}, csrf=False)).status_code == 403
    rival = await world.user("rival")
    assert (await rival.post(check, {"arg.amount": "1"})).status_code == 404
    assert (await world.approval(made["approval_id"]))["state"] == "pending"


async def test_batch_decides_each_item_on_its_own(world: World) -> None:
    made = await world.pending(3)
    lead = await world.user("lead")
    queue = (await lead.get("/ui/approvals")).text
    ids = [m["approval_id"] for m in made]
    assert all(f'name="ids" value="{i}"' in queue for i in ids)  # same rule, risk 0.5
    r = await lead.post(
        "/ui/approvals/batch", {"decision": "approve", "rationale": "routine", "ids": ids}
    )
    assert r.status_code == 200
    assert re.findall(r'class="outcome">([^<]*)', r.text) == ["approved"] * 3
    audit = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.app),
        base_url=BASE,
        headers={"Authorization": "Bearer " + world.keys["audit"]},
    )
    async with audit:
        for m in made:
            events = (await audit.get(f"/v1/ledger/runs/{m['run_id']}/events")).json()["items"]
            decided = [e for e in events if e["type"] == "approval_decided"]
            assert len(decided) == 1 and decided[0]["payload"]["rationale"] == "routine"


async def test_batch_refuses_without_a_rationale_and_decides_nothing(world: World) -> None:
    made = await world.pending(2)
    lead = await world.user("lead")
    ids = [m["approval_id"] for m in made]
    r = await lead.post("/ui/approvals/batch", {"decision": "approve", "rationale": "", "ids": ids})
    assert r.status_code == 422
    assert [(await world.approval(i))["state"] for i in ids] == ["pending", "pending"]


async def test_text_from_agents_and_tickets_is_shown_never_run(world: World) -> None:
    attack = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    made = await refund_run(world.agent, large_refund_tickets(world.tmp)[0], reason=attack)
    assert made["status"] == "pending"
    lead = await world.user("lead")
    for path in [
        "/ui/approvals",
        f"/ui/approvals/{made['approval_id']}",
        f"/ui/runs/{made['run_id']}",
        f"/ui/runs/{made['run_id']}/report.html",
    ]:
        page = (await lead.get(path)).text
        assert "&lt;img src=x" in page and "<img src=x" not in page and "alert(2)</script>" not in page


# -- scoping: foreign tenants and under-privileged keys ---------------------------------------


async def test_a_foreign_tenants_key_sees_nothing_and_decides_nothing(world: World) -> None:
    [made] = await world.pending(1)
    run_id, approval_id = made["run_id"], made["approval_id"]
    root = await world.user("root")
    await root.post(
        "/ui/switches",
        {"scope": "tenant", "target": "acme", "active": "on", "reason": "r", "confirm": "yes"},
    )
    for name in ["rival", "rival-admin"]:
        rival = await world.user(name)
        queue = (await rival.get("/ui/approvals")).text
        assert approval_id not in queue and "0</span> pending" in queue
        assert (await rival.get(f"/ui/approvals/{approval_id}")).status_code == 404
        assert (await rival.get(f"/ui/runs/{run_id}")).status_code == 404
        assert (await rival.get(f"/ui/runs/{run_id}/export.json")).status_code == 404
        assert (await rival.get(f"/ui/runs/{run_id}/report.html")).status_code == 404
        assert run_id not in (await rival.get("/ui/runs")).text
        assert run_id not in (await rival.get("/ui/runs?tenant=acme")).text
        assert "acme" not in (await rival.get("/ui/switches")).text
        decide = await rival.post(
            f"/ui/approvals/{approval_id}/decide", {"decision": "approve", "rationale": "mine"}
        )
        batch = await rival.post(
            "/ui/approvals/batch", {"decision": "approve", "rationale": "x", "ids": [approval_id]}
        )
        assert decide.status_code == 404 and batch.status_code == 404
    rival_admin = world.browsers[-1]
    flip = await rival_admin.post(
        "/ui/switches",
        {"scope": "tenant", "target": "acme", "active": "off", "reason": "x", "confirm": "yes"},
    )
    assert flip.status_code == 403
    ledger = (await rival_admin.get("/ui/ledger")).text
    assert "0 events" in ledger and "tenant globex" in ledger
    export = await rival_admin.get("/ui/ledger/export")
    assert export.status_code == 200 and run_id not in export.text
    costs = await rival_admin.get("/ui/costs")
    assert costs.status_code == 200 and "0 runs" in costs.text
    assert (await world.approval(approval_id))["state"] == "pending"


async def test_an_agent_key_reads_its_own_runs_and_may_not_decide_or_flip(world: World) -> None:
    [made] = await world.pending(1)
    bot = await world.user("bot")
    assert made["approval_id"] in (await bot.get("/ui/approvals")).text  # as GET /v1/approvals
    page = (await bot.get(f"/ui/approvals/{made['approval_id']}")).text
    assert "issue_refund" in page and 'id="decide"' not in page  # no form it cannot use
    decide = await bot.post(
        f"/ui/approvals/{made['approval_id']}/decide", {"decision": "approve", "rationale": "me"}
    )
    assert decide.status_code == 403 and "cannot do this" in decide.text
    batch = await bot.post(
        "/ui/approvals/batch",
        {"decision": "approve", "rationale": "me", "ids": [made["approval_id"]]},
    )
    assert batch.status_code == 403
    flip = await bot.post(
        "/ui/switches", {"scope": "tenant", "target": "acme", "active": "on", "reason": "x"}
    )
    assert flip.status_code == 403 and "Review" not in flip.text  # refused before confirming
    assert (await bot.get("/ui/ledger")).status_code == 403
    assert (await bot.get("/ui/ledger/export")).status_code == 403
    assert (await bot.get("/ui/costs")).status_code == 403
    assert (await world.approval(made["approval_id"]))["state"] == "pending"
    assert world.app.state.warden.switches.list() == []


# -- runs, switches, ledger -------------------------------------------------------------------


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_the_stylesheets_colour_pairs_meet_wcag_aa() -> None:
    """The pairs console.css lists (every text colour on its background) reach 4.5:1, as
    it says; and its variables hold those colours."""
    import warden.server.ui as ui

    css = (Path(ui.__file__).parent / "static" / "console.css").read_text()
    pairs = re.findall(r"(#[0-9a-f]{6}) on (#[0-9a-f]{6}) ([0-9.]+):1", css)
    assert len(pairs) >= 8
    for fg, bg, stated in pairs:
        light, dark = sorted([_luminance(fg), _luminance(bg)], reverse=True)
        ratio = (light + 0.05) / (dark + 0.05)
        assert ratio >= 4.5 and abs(ratio - float(stated)) < 0.15, (fg, bg, ratio)
    declared = set(re.findall(r"--[a-z-]+: (#[0-9a-f]{6})", css)) - {"#c4c4c4", "#ffbf47"}
    listed = {c for pair in pairs for c in pair[:2]}
    assert declared <= listed  # every colour variable (but borders and focus) is in a pair


async def test_run_timeline_explains_every_rule_and_exports(world: World) -> None:
    [made] = await world.pending(1)
    run_id = made["run_id"]
    lead = await world.user("lead")
    await lead.post(
        f"/ui/approvals/{made['approval_id']}/decide",
        {"decision": "reject", "rationale": "customer already refunded"},
    )
    page = (await lead.get(f"/ui/runs/{run_id}")).text
    assert page.count('class="step ') == 4
    assert "refund_only_to_original_method" in page and "facts.order.payment_method_id" in page
    assert "Approval decided" in page and "customer already refunded" in page
    exported = await lead.get(f"/ui/runs/{run_id}/export.json")
    assert "attachment" in exported.headers["content-disposition"]
    body = json.loads(exported.text)
    refund = body["steps"][3]
    assert refund["tool"] == "issue_refund" and refund["untrusted_args"] == ["amount", "reason"]
    assert {r["name"] for r in refund["explanation"]["rules"]} >= {
        "refund_over_100_needs_approval",
        "no_deletes",
    }
    assert refund["approvals"][-1]["rationale"] == "customer already refunded"
    report = await lead.get(f"/ui/runs/{run_id}/report.html")
    assert report.status_code == 200 and "<style>" in report.text
    assert 'font: 15px/1.45 system-ui, -apple-system, "Segoe UI"' in report.text  # not escaped
    assert report.text.count("<details class=\"explain\" open>") == 4  # a report hides nothing
    assert "<script" not in report.text and "<link" not in report.text and "src=" not in report.text


async def test_runs_filter_by_outcome_rule_and_time(world: World) -> None:
    made = await world.pending(2)
    finished = await world.agent.post(
        f"/v1/runs/{made[0]['run_id']}/finish", json={"outcome": "escalated"}
    )
    assert finished.status_code == 200
    lead = await world.user("lead")
    escalated = (await lead.get("/ui/runs?outcome=escalated")).text
    assert made[0]["run_id"] in escalated and made[1]["run_id"] not in escalated
    by_rule = (await lead.get("/ui/runs?rule=refund_over_100_needs_approval&since=1h")).text
    assert made[0]["run_id"] in by_rule and made[1]["run_id"] in by_rule
    assert made[0]["run_id"] not in (await lead.get("/ui/runs?rule=no_deletes")).text
    bad = await lead.get("/ui/runs?since=forever")
    assert bad.status_code == 422 and "not a duration" in bad.text


async def test_switch_flips_only_after_confirmation(world: World) -> None:
    root = await world.user("root")
    form = {"scope": "workflow", "target": "refund_triage", "active": "on", "reason": "incident 42"}
    review = await root.post("/ui/switches", form)
    assert review.status_code == 200 and 'name="confirm" value="yes"' in review.text
    assert world.app.state.warden.switches.list() == []
    done = await root.post("/ui/switches", {**form, "confirm": "yes"})
    assert done.status_code == 200 and "incident 42" in done.text and "key:root" in done.text
    [switch] = world.app.state.warden.switches.list()
    assert switch.active and switch.set_by == "key:root" and switch.reason == "incident 42"
    no_reason = await root.post("/ui/switches", {**form, "reason": ""})
    assert no_reason.status_code == 422


async def test_ledger_page_verifies_the_chain(world: World) -> None:
    await world.pending(1)
    audit = await world.user("audit")
    page = (await audit.get("/ui/ledger")).text
    assert "Verified: the hash chains are intact" in page
    assert "signs no checkpoints" in page
    export = await audit.get("/ui/ledger/export")
    lines = [json.loads(x) for x in export.text.splitlines()]
    assert lines and {e["tenant"] for e in lines} == {"acme"}

