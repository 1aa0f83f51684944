"""The dashboards in a real browser: headless Debian chromium against a real ``warden serve``
holding the demo's runs (``warden demo --tickets 40``; see ``_console_browser.Server``).

Needs ``/usr/bin/chromium`` and Playwright's Python package; skipped with a message when
either is missing, unless ``WARDEN_REQUIRE_BROWSER=1``. The screenshot goes to
``test-artifacts/console/dashboards.png`` (one is kept as docs/console/dashboards.png).
"""

from __future__ import annotations

from typing import Any

import pytest
from _console_browser import Server, accessible, browser_needed, chromium, open_page, server, shot

__all__ = ["browser_needed", "chromium", "server"]  # fixtures, used by name

pytestmark = pytest.mark.browser


def test_dashboards_render_the_demos_runs_and_switch_window(chromium: Any, server: Server) -> None:
    page = open_page(chromium, server, "ops")
    page.get_by_role("link", name="Dashboards").click()
    page.wait_for_url("**/ui/dashboards")
    assert page.locator("#no-runs").count() == 0
    charts = page.locator("svg[role=img]")
    assert charts.count() >= 5
    assert page.locator("svg[role=img] rect.bar").count() > 0  # bars drawn, from the demo
    first = charts.first
    assert first.get_attribute("aria-labelledby") is not None
    assert page.locator("#roi-net").inner_text().startswith(("$", "-$"))
    accessible(page)
    shot(page, "dashboards")
    page.locator("details summary").first.click()  # the chart's table opens
    assert page.locator("details[open] tbody tr").count() > 0
    page.get_by_label("Window").select_option("1h")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/ui/dashboards?window=1h*")
    assert page.locator("#fig-success-rate").count() == 1  # the demo ran minutes ago
    accessible(page)
    page.context.close()


def test_a_cross_tenant_key_sees_no_runs_on_the_dashboards(chromium: Any, server: Server) -> None:
    page = open_page(chromium, server, "rival")
    page.goto("/ui/dashboards?window=30d")
    assert page.locator("#no-runs").is_visible()
    assert page.locator("svg[role=img]").count() == 0
    page.context.close()
