"""The console in a real browser: headless Debian chromium against a real ``warden serve``.

Needs ``/usr/bin/chromium`` (``sh scripts/_browser.sh``) and Playwright's Python package
(the ``dev`` extra); no browser is downloaded. Skipped with a message when either is
missing, unless ``WARDEN_REQUIRE_BROWSER=1``. Screenshots of every page go to
``test-artifacts/console/`` (one of each is kept in docs/console/).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from _console_seed import large_refund_tickets, refund_run
from _stack import free_port

from warden.auth import KeyStore
from warden.store import Store

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "console"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: run `sh scripts/_browser.sh` (installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is missing: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def browser_needed() -> None:
    why = _missing()
    if why is not None:
        if os.environ.get("WARDEN_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)


class Server:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The demo's own tickets first (tenant demo-..., model calls, costs, decided
        # approvals), into the store the server then serves; from another directory, so
        # that the server seeds its own helpdesk.
        (home / "demo").mkdir()
        demo = subprocess.run(
            [sys.executable, "-m", "warden", "demo", "--tickets", "40", "--quiet",
             "--store", f"sqlite:///{home / '.warden' / 'warden.db'}"],
            cwd=home / "demo",
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert demo.returncode == 0, demo.stderr
        # The server's output goes to a file: a pipe nobody reads fills up and blocks the
        # server's logging, and with it every request.
        self.log = home / "serve.log"
        self._log = self.log.open("w")
        self.process = subprocess.Popen(
            # Two workers: a sign-in made on one is honoured by the other (the secret
            # `warden serve` hands both).
            [sys.executable, "-m", "warden", "serve", "--port", str(self.port), "--workers", "2"],
            cwd=home,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.1)
        store = Store(f"sqlite:///{home / '.warden' / 'warden.db'}")
        keys = KeyStore(store)
        self.keys: dict[str, str] = {}
        for name, role, tenant, extra in [
            ("bot", "agent", "acme", {"agent": "refund-bot"}),
            ("lead", "approver", "acme", {"approval_roles": ["support_lead"]}),
            ("ops", "admin", "*", {"approval_roles": ["support_lead"]}),
            ("rival", "admin", "globex", {"approval_roles": ["support_lead"]}),
        ]:
            self.keys[name] = keys.create(
                name=name, role=role, tenant=tenant, created_by="test", **extra
            )[1]
        store.dispose()

    def pending(self, n: int, skip: int = 0) -> list[dict[str, Any]]:
        async def work() -> list[dict[str, Any]]:
            async with httpx.AsyncClient(
                base_url=self.url, headers={"Authorization": "Bearer " + self.keys["bot"]}
            ) as client:
                tickets = large_refund_tickets(self.home)[skip : skip + n]
                return [await refund_run(client, t) for t in tickets]

        # Playwright's sync API runs an event loop in this thread: seed from another one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(lambda: asyncio.run(work())).result()

    def approval(self, approval_id: str) -> dict[str, Any]:
        r = httpx.get(
            f"{self.url}/v1/approvals/{approval_id}",
            headers={"Authorization": "Bearer " + self.keys["ops"]},
        )
        found: dict[str, Any] = r.json()
        return found

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self._log.close()


@pytest.fixture(scope="module")
def server(browser_needed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    made = Server(tmp_path_factory.mktemp("console"))
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def chromium(server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _page(chromium: Any, server: Server, key: str) -> Any:
    context = chromium.new_context(base_url=server.url, accept_downloads=True)
    page = context.new_page()
    page.goto("/ui/approvals")
    assert "/ui/signin" in page.url  # no session yet
    page.get_by_label("API key").fill(server.keys[key])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/approvals")
    return page


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


_UNLABELLED = """() => Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href]'))
  .filter(el => {
    if (el.tagName === 'A' || el.tagName === 'BUTTON') return !el.textContent.trim() && !el.getAttribute('aria-label');
    return !(el.labels && el.labels.length) && !el.getAttribute('aria-label');
  }).map(el => el.outerHTML.slice(0, 120))"""


def _accessible(page: Any) -> None:
    """Every control is labelled and reachable with Tab (none has a negative tabindex)."""
    assert page.evaluate(_UNLABELLED) == []
    assert page.locator("input:not([type=hidden])[tabindex='-1'], button[tabindex='-1']").count() == 0


def test_sign_in_and_approve_one_with_the_keyboard(chromium: Any, server: Server) -> None:
    made = server.pending(1)
    page = _page(chromium, server, "lead")
    row = page.locator(f"tr[data-id='{made[0]['approval_id']}']")
    assert row.count() == 1
    assert re.fullmatch(r"1[45]m \d\ds", row.locator("time").inner_text())  # the 15m SLA
    _accessible(page)
    _shot(page, "approvals")
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.wait_for_url(f"**/ui/approvals/{made[0]['approval_id']}")
    assert page.locator("tr.untrusted").count() == 2  # amount and reason came from the ticket
    _accessible(page)
    _shot(page, "approval")
    # Keyboard alone: Tab reaches the rationale and the Approve button.
    reached = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id"))
    assert {"rationale", "approve", "reject"} <= reached
    page.locator("h1").click()  # focus off the fields: shortcuts are off while typing
    page.keyboard.press("a")
    assert page.evaluate("document.activeElement.id") == "rationale"
    page.keyboard.type("amount matches the order")
    page.keyboard.press("Control+Enter")
    page.wait_for_url("**/ui/approvals?done=*")
    assert "approved" in page.get_by_role("status").first.inner_text()
    record = server.approval(made[0]["approval_id"])
    assert record["state"] == "approved" and record["decided_by"] == "key:lead"
    page.context.close()


def test_batch_approve_three(chromium: Any, server: Server) -> None:
    made = server.pending(3, skip=1)
    page = _page(chromium, server, "lead")
    for m in made:
        page.locator(f"#sel-{m['approval_id']}").check()
    page.get_by_label("Rationale").fill("routine refunds, orders checked")
    page.get_by_role("button", name="Approve selected").click()
    page.wait_for_url("**/ui/approvals/batch")
    assert page.locator("td.outcome").all_inner_texts() == ["approved"] * 3
    _shot(page, "batch")
    assert [server.approval(m["approval_id"])["state"] for m in made] == ["approved"] * 3
    page.context.close()


def test_edit_args_shows_the_error_at_the_field_then_approves(
    chromium: Any, server: Server
) -> None:
    [made] = server.pending(1, skip=4)
    page = _page(chromium, server, "lead")
    page.goto(f"/ui/approvals/{made['approval_id']}")
    page.get_by_text("Approve with edited arguments").click()
    page.get_by_label("Rationale").fill("pay part now")
    amount = page.locator("#arg-amount")
    amount.fill("a lot")
    # Checked as it is typed (htmx), then again when the form is sent.
    from playwright.sync_api import expect

    expect(page.locator("#arg-amount-error")).to_contain_text("valid number")
    assert server.approval(made["approval_id"])["state"] == "pending"
    page.get_by_role("button", name="Approve with these arguments").click()
    error = page.locator("#arg-amount-error")
    assert "valid number" in error.inner_text()
    assert page.locator("#arg-amount").get_attribute("aria-invalid") == "true"
    _shot(page, "approval-edit-error")
    assert server.approval(made["approval_id"])["state"] == "pending"
    page.locator("#arg-amount").fill("80")
    page.get_by_role("button", name="Approve with these arguments").click()
    page.wait_for_url("**/ui/approvals?done=*")
    record = server.approval(made["approval_id"])
    assert record["state"] == "approved" and record["args"]["amount"] == 80
    page.context.close()


def test_new_items_appear_without_a_reload(chromium: Any, server: Server) -> None:
    page = _page(chromium, server, "lead")
    page.evaluate("window.__sameDocument = true")
    [made] = server.pending(1, skip=5)
    page.locator(f"tr[data-id='{made['approval_id']}']").wait_for(timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True  # swapped in, not reloaded
    page.context.close()


def test_run_explain_view_and_exports(chromium: Any, server: Server) -> None:
    page = _page(chromium, server, "lead")
    page.get_by_role("link", name="Runs").click()
    page.wait_for_url("**/ui/runs")
    _accessible(page)
    _shot(page, "runs")
    page.locator("table.runs a").first.click()
    page.wait_for_selector("ol.timeline")
    page.locator("details.explain summary").last.click()
    assert page.locator("details.explain[open] tr.matched-true").count() >= 1
    _accessible(page)
    _shot(page, "run")
    with page.expect_download() as got:
        page.locator("#export-json").click()
    exported = json.loads(Path(got.value.path()).read_text())
    assert exported["steps"][-1]["explanation"]["rules"]
    with page.expect_download() as got:
        page.locator("#export-html").click()
    report = Path(got.value.path()).read_text()
    assert "<script" not in report and "Every call the agent proposed" in report
    # The report opens on its own, offline, and shows the same timeline.
    offline = page.context.new_page()
    offline.set_content(report)
    assert offline.locator("ol.timeline li.step").count() == len(exported["steps"])
    _shot(offline, "report")
    page.context.close()


def test_flip_a_switch_with_confirmation(chromium: Any, server: Server) -> None:
    page = _page(chromium, server, "ops")
    page.get_by_role("link", name="Kill switches").click()
    page.get_by_label("Scope").select_option("tool")
    page.get_by_label("Target").fill("delete_customer")
    page.get_by_label("New state").select_option("on")
    page.get_by_label("Reason (recorded)").fill("incident 7: deletes under review")
    page.get_by_role("button", name="Review the change").click()
    assert "Confirm" in page.locator("h1").inner_text()
    _shot(page, "switch-confirm")
    page.get_by_role("button", name="Yes, turn it on").click()
    row = page.locator("table.switches tr", has_text="delete_customer")
    assert "ON" in row.inner_text() and "key:ops" in row.inner_text()
    _accessible(page)
    _shot(page, "switches")
    for name, path in [("ledger", "/ui/ledger"), ("costs", "/ui/costs")]:
        page.goto(path)
        _accessible(page)
        _shot(page, name)
        if name == "costs":  # the demo's spend, seen by an all-tenant key
            assert page.locator("table.costs tbody tr").count() == 1
            assert not re.search(r"\b0 runs", page.locator("main").inner_text())
    assert "Verified" in page.goto("/ui/ledger").text()
    page.context.close()


def test_a_cross_tenant_key_sees_nothing(chromium: Any, server: Server) -> None:
    [made] = server.pending(1, skip=6)
    page = _page(chromium, server, "rival")
    assert page.locator("tr.item").count() == 0
    assert page.locator("#pending-count").inner_text() == "0"
    answer = page.goto(f"/ui/approvals/{made['approval_id']}")
    assert answer is not None and answer.status == 404
    answer = page.goto(f"/ui/runs/{made['run_id']}")
    assert answer is not None and answer.status == 404
    page.goto("/ui/runs")
    assert page.locator("table.runs tbody tr").count() == 0
    _shot(page, "cross-tenant")
    page.context.close()
