"""Fixtures for the console's browser tests: headless Debian chromium against a real
``warden serve`` seeded with the demo. Test modules import the fixtures they use
(``from _console_browser import server, chromium, ...``); each module gets its own server.

The console in a real browser.

Needs ``/usr/bin/chromium`` (``sh scripts/_browser.sh``) and Playwright's Python package
(the ``dev`` extra); no browser is downloaded. Skipped with a message when either is
missing, unless ``WARDEN_REQUIRE_BROWSER=1``. Screenshots of every page go to
``test-artifacts/console/`` (one of each is kept in docs/console/).
"""

from __future__ import annotations

import asyncio
import os
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
            [
                sys.executable,
                "-m",
                "warden",
                "demo",
                "--tickets",
                "40",
                "--quiet",
                "--store",
                f"sqlite:///{home / '.warden' / 'warden.db'}",
            ],
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


def open_page(chromium: Any, server: Server, key: str) -> Any:
    context = chromium.new_context(base_url=server.url, accept_downloads=True)
    page = context.new_page()
    page.goto("/ui/approvals")
    assert "/ui/signin" in page.url  # no session yet
    page.get_by_label("API key").fill(server.keys[key])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/approvals")
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


_UNLABELLED = """() => Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href]'))
  .filter(el => {
    if (el.tagName === 'A' || el.tagName === 'BUTTON') return !el.textContent.trim() && !el.getAttribute('aria-label');
    return !(el.labels && el.labels.length) && !el.getAttribute('aria-label');
  }).map(el => el.outerHTML.slice(0, 120))"""


def accessible(page: Any) -> None:
    """Every control is labelled and reachable with Tab (none has a negative tabindex),
    and every visible text meets WCAG AA contrast."""
    assert page.evaluate(_UNLABELLED) == []
    assert (
        page.locator("input:not([type=hidden])[tabindex='-1'], button[tabindex='-1']").count() == 0
    )
    assert low_contrast(page) == []


# WCAG 2.x contrast of every visible text against the background it is drawn on (the
# nearest ancestor with an opaque-enough background colour, composited over white).
# Large text (24 px, or 18.66 px bold) needs 3:1, other text 4.5:1 (AA).
_LOW_CONTRAST = """() => {
  const rgba = (s) => { const m = s.match(/[\\d.]+/g) || ['0','0','0','0'];
    return [Number(m[0]), Number(m[1]), Number(m[2]), m.length > 3 ? Number(m[3]) : 1]; };
  const over = (top, below) => { const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + below[i] * (1 - a)).concat([1]); };
  const lum = (c) => { const f = (v) => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const background = (el) => { const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    let bg = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg; };
  const bad = [];
  for (const el of document.querySelectorAll('body *')) {
    const text = Array.from(el.childNodes).filter(n => n.nodeType === 3)
      .map(n => n.textContent.trim()).join('');
    if (!text || !el.getClientRects().length) continue;
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden' || Number(st.opacity) === 0) continue;
    const bg = background(el);
    const fg = over(rgba(st.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(st.fontSize), bold = Number(st.fontWeight) >= 700;
    const need = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    if (ratio + 1e-6 < need) bad.push(`${el.tagName.toLowerCase()}.${el.className}`
      + ` "${text.slice(0, 40)}" ${ratio.toFixed(2)}:1 < ${need}:1`);
  }
  return bad; }"""


def low_contrast(page: Any) -> list[str]:
    """Texts on the page under WCAG AA contrast (empty: every text meets it)."""
    found: list[str] = page.evaluate(_LOW_CONTRAST)
    return found
