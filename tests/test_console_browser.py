"""The console in a real browser: headless Debian chromium against a real ``warden serve``.

Needs ``/usr/bin/chromium`` (``sh scripts/_browser.sh``) and Playwright's Python package
(the ``dev`` extra); no browser is downloaded. Skipped with a message when either is
missing, unless ``WARDEN_REQUIRE_BROWSER=1``. Screenshots of every page go to
``test-artifacts/console/`` (one of each is kept in docs/console/).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from _console_browser import (
    Server,
    accessible,
    browser_needed,
    chromium,
    low_contrast,
    open_page,
    server,
    shot,
)

__all__ = ["browser_needed", "chromium", "server"]  # fixtures, used by name

pytestmark = pytest.mark.browser


def test_sign_in_and_approve_one_with_the_keyboard(chromium: Any, server: Server) -> None:
    made = server.pending(1)
    page = open_page(chromium, server, "lead")
    row = page.locator(f"tr[data-id='{made[0]['approval_id']}']")
    assert row.count() == 1
    assert re.fullmatch(r"1[45]m \d\ds", row.locator("time").inner_text())  # the 15m SLA
    accessible(page)
    shot(page, "approvals")
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.wait_for_url(f"**/ui/approvals/{made[0]['approval_id']}")
    assert page.locator("tr.untrusted").count() == 2  # amount and reason came from the ticket
    accessible(page)
    shot(page, "approval")
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
    page = open_page(chromium, server, "lead")
    for m in made:
        page.locator(f"#sel-{m['approval_id']}").check()
    page.get_by_label("Rationale").fill("routine refunds, orders checked")
    page.get_by_role("button", name="Approve selected").click()
    page.wait_for_url("**/ui/approvals/batch")
    assert page.locator("td.outcome").all_inner_texts() == ["approved"] * 3
    shot(page, "batch")
    assert [server.approval(m["approval_id"])["state"] for m in made] == ["approved"] * 3
    page.context.close()


def test_edit_args_shows_the_error_at_the_field_then_approves(
    chromium: Any, server: Server
) -> None:
    [made] = server.pending(1, skip=4)
    page = open_page(chromium, server, "lead")
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
    shot(page, "approval-edit-error")
    assert server.approval(made["approval_id"])["state"] == "pending"
    page.locator("#arg-amount").fill("80")
    page.get_by_role("button", name="Approve with these arguments").click()
    page.wait_for_url("**/ui/approvals?done=*")
    record = server.approval(made["approval_id"])
    assert record["state"] == "approved" and record["args"]["amount"] == 80
    page.context.close()


def test_new_items_appear_without_a_reload(chromium: Any, server: Server) -> None:
    page = open_page(chromium, server, "lead")
    page.evaluate("window.__sameDocument = true")
    [made] = server.pending(1, skip=5)
    page.locator(f"tr[data-id='{made['approval_id']}']").wait_for(timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True  # swapped in, not reloaded
    page.context.close()


def test_run_explain_view_and_exports(chromium: Any, server: Server) -> None:
    page = open_page(chromium, server, "lead")
    page.get_by_role("link", name="Runs").click()
    page.wait_for_url("**/ui/runs")
    accessible(page)
    shot(page, "runs")
    page.locator("table.runs a").first.click()
    page.wait_for_selector("ol.timeline")
    page.locator("details.explain summary").last.click()
    assert page.locator("details.explain[open] tr.matched-true").count() >= 1
    accessible(page)
    shot(page, "run")
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
    shot(offline, "report")
    page.context.close()


def test_flip_a_switch_with_confirmation(chromium: Any, server: Server) -> None:
    page = open_page(chromium, server, "ops")
    page.get_by_role("link", name="Kill switches").click()
    page.get_by_label("Scope").select_option("tool")
    page.get_by_label("Target").fill("delete_customer")
    page.get_by_label("New state").select_option("on")
    page.get_by_label("Reason (recorded)").fill("incident 7: deletes under review")
    page.get_by_role("button", name="Review the change").click()
    assert "Confirm" in page.locator("h1").inner_text()
    shot(page, "switch-confirm")
    page.get_by_role("button", name="Yes, turn it on").click()
    row = page.locator("table.switches tr", has_text="delete_customer")
    assert "ON" in row.inner_text() and "key:ops" in row.inner_text()
    accessible(page)
    shot(page, "switches")
    for name, path in [("ledger", "/ui/ledger"), ("costs", "/ui/costs")]:
        page.goto(path)
        accessible(page)
        shot(page, name)
        if name == "costs":  # the demo's spend, seen by an all-tenant key
            assert page.locator("table.costs tbody tr").count() == 1
            assert not re.search(r"\b0 runs", page.locator("main").inner_text())
    assert "Verified" in page.goto("/ui/ledger").text()
    page.context.close()


def test_a_cross_tenant_key_sees_nothing(chromium: Any, server: Server) -> None:
    [made] = server.pending(1, skip=6)
    page = open_page(chromium, server, "rival")
    assert page.locator("tr.item").count() == 0
    assert page.locator("#pending-count").inner_text() == "0"
    answer = page.goto(f"/ui/approvals/{made['approval_id']}")
    assert answer is not None and answer.status == 404
    answer = page.goto(f"/ui/runs/{made['run_id']}")
    assert answer is not None and answer.status == 404
    page.goto("/ui/runs")
    assert page.locator("table.runs tbody tr").count() == 0
    shot(page, "cross-tenant")
    page.context.close()


def test_the_contrast_check_finds_text_under_aa(chromium: Any, server: Server) -> None:
    """The check ``accessible`` runs on every page can fail: grey #999 on white is 2.85:1."""
    page = chromium.new_page()
    page.set_content(
        "<p style='color:#999'>too light</p><p style='color:#595959'>dark enough</p>"
        "<h1 style='color:#888;font-size:32px'>large and 3.5:1</h1>"
    )
    found = low_contrast(page)
    page.close()
    assert len(found) == 1
    assert "too light" in found[0]
