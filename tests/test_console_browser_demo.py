"""``warden demo --serve``: what a newcomer gets, tested as a newcomer uses it.

One ``python -m warden demo --serve`` in a temporary directory (the demo's run, refunds
left waiting for a support lead, a key for the demo tenant, the server): the printed key signs in
over HTTP (the CSRF form flow) and in headless chromium, the queue holds the refunds, one
is approved, an admin flips a switch and the page follows it until the server has seen it
(the screenshot kept as docs/console/switches.png), and SIGTERM stops it cleanly.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _console_browser import ARGS, ARTIFACTS, CHROMIUM, accessible, browser_needed, shot
from _stack import free_port

from warden.auth import KeyStore
from warden.pipeline._replicas import list_replicas
from warden.store import Store

__all__ = ["browser_needed"]  # a fixture, used by name

PENDING = 3


class Demo:
    def __init__(self, home: Path, name: str = "demo", tickets: int = 20, pending: int = PENDING) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = home / f"{name}.out"
        self._out = self.out.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "warden", "demo", "--serve", "--quiet",
                "--tickets", str(tickets), "--pending", str(pending), "--port", str(self.port),
            ],
            cwd=home,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 300
        while not self._ready():
            assert self.process.poll() is None, self.out.read_text()
            assert time.monotonic() < deadline, self.out.read_text()
            time.sleep(0.2)
        [line] = [ln for ln in self.out.read_text().splitlines() if ln.startswith("  Key ")]
        self.key = line.split()[-1]

    def _ready(self) -> bool:
        if "  Key " not in self.out.read_text():
            return False
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def admin_key(self) -> str:
        store = Store(f"sqlite:///{self.home / '.warden' / 'warden.db'}")
        try:
            return KeyStore(store).create(name="ops", role="admin", tenant="*", created_by="t")[1]
        finally:
            store.dispose()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self._out.close()
        return code


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    made = Demo(tmp_path_factory.mktemp("demo-serve"))
    try:
        yield made
    finally:
        made.stop()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:300]
    return found[1]


def test_it_prints_the_console_the_key_and_how_to_stop(demo: Demo) -> None:
    text = demo.out.read_text()
    assert f"  Open      {demo.url}/ui" in text
    assert "Ctrl-C stops" in text
    assert demo.key not in text.replace(f"  Key       {demo.key}", "")  # nowhere else, no URL


def test_the_printed_key_signs_in_and_sees_the_refunds_waiting(demo: Demo) -> None:
    with httpx.Client(base_url=demo.url, timeout=30) as browser:
        form = browser.get("/ui/signin")
        assert form.status_code == 200
        signed = browser.post(
            "/ui/signin", data={"csrf": _csrf(form.text), "key": demo.key, "next": "/ui/approvals"}
        )
        assert signed.status_code == 303
        queue = browser.get("/ui/approvals")
    assert f'<span id="pending-count">{PENDING}</span>' in queue.text


@pytest.mark.browser
def test_a_newcomer_approves_one_and_an_admin_sees_a_switch_reach_the_server(
    browser_needed: None, demo: Demo
) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = _signed_in(chromium, demo, demo.key)
            before = page.locator("tr.item").count()
            assert before >= 1
            page.locator("tr.item a.open").first.click()
            page.get_by_label("Rationale").fill("order checked, refund is due")
            page.get_by_role("button", name="Approve", exact=True).click()
            expect(page.get_by_role("status").first).to_contain_text("approved")
            page.goto("/ui/approvals")
            expect(page.locator("tr.item")).to_have_count(before - 1)
            # ... and sees the dashboards of the demo's tenant with the same key
            page.get_by_role("link", name="Dashboards").click()
            page.wait_for_url("**/ui/dashboards**")
            expect(page.get_by_role("heading", name="Dashboards", exact=True)).to_be_visible()
            expect(page.locator("main")).to_contain_text("Success rate")
            expect(page.locator("main")).to_contain_text("Return on investment")
            accessible(page)
            page.context.close()

            admin = _signed_in(chromium, demo, demo.admin_key())
            admin.goto("/ui/switches")
            admin.get_by_label("Scope").select_option("tool")
            admin.get_by_label("Target").fill("delete_customer")
            admin.get_by_label("New state").select_option("on")
            admin.get_by_label("Reason (recorded)").fill("incident 7: deletes under review")
            admin.get_by_role("button", name="Review the change").click()
            admin.get_by_role("button", name="Yes, turn it on").click()
            # htmx polls until the server's one worker has read the switch
            expect(admin.locator("#switch-seen")).to_contain_text(
                "seen by 1 of 1 live replica", timeout=15_000
            )
            admin.get_by_role("link", name="Kill switches").click()  # the table, reloaded
            row = admin.locator("table.switches tr", has_text="delete_customer")
            expect(row).to_contain_text("seen by 1 of 1 live replica")
            accessible(admin)
            shot(admin, "switches")
            admin.context.close()
        finally:
            chromium.close()


def _signed_in(chromium: Any, demo: Demo, key: str) -> Any:
    context = chromium.new_context(base_url=demo.url)
    page = context.new_page()
    page.goto("/ui/approvals")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/approvals")
    return page


def test_sigterm_stops_it_cleanly(demo: Demo) -> None:
    # uvicorn shuts down gracefully, then re-raises the signal (so the exit says why)
    assert demo.stop() == -signal.SIGTERM
    assert "Traceback" not in demo.out.read_text()
    store = Store(f"sqlite:///{demo.home / '.warden' / 'warden.db'}")
    try:
        assert list_replicas(store) == []  # the shutdown ran: the worker left the registry
    finally:
        store.dispose()
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", demo.port))


def test_a_second_run_on_the_same_store_adds_a_key_and_items(demo: Demo) -> None:
    """After Ctrl-C, running it again in the same directory (store and helpdesk) works: a
    new key, more refunds waiting; a busy port is one line and exit 1."""
    demo.stop()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [sys.executable, "-m", "warden", "demo", "--serve", "--port", str(port)],
            cwd=demo.home, capture_output=True, text=True, timeout=120, check=False,
        )
    assert busy.returncode == 1
    assert busy.stderr.strip().splitlines() == [
        f"error 127.0.0.1:{port} is in use: stop what listens there or pick another --port"
    ]
    again = Demo(demo.home, "again", tickets=10, pending=2)
    try:
        assert again.key != demo.key
        r = httpx.get(again.url + "/v1/approvals", headers={"Authorization": f"Bearer {again.key}"})
        assert len(r.json()["items"]) == 2
    finally:
        assert again.stop() == -signal.SIGTERM
