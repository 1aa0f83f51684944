"""The approval item in a real browser: the agent's stated rationale (shown as its words,
as text) and the suggested action with its sources, next to the evidence.

Headless Debian chromium against a real ``warden serve`` (fixtures in
tests/_console_browser.py); skipped unless the browser is there, failed instead with
``WARDEN_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from _console_browser import Server, accessible, browser_needed, chromium, open_page, server, shot
from _console_seed import large_refund_tickets

__all__ = ["browser_needed", "chromium", "server"]  # fixtures, used by name

pytestmark = pytest.mark.browser

INJECTED = "<img src=x onerror=alert(1)>"


def _refund(server: Server, ticket_id: str, rationale: str | None) -> dict[str, Any]:
    """The demo agent's calls for one large refund ticket, saying ``rationale``."""
    with httpx.Client(
        base_url=server.url, headers={"Authorization": "Bearer " + server.keys["bot"]}, timeout=30
    ) as client:
        run_id = client.post(
            "/v1/runs",
            json={"workflow": "refund_triage", "agent": "refund-bot", "task": f"ticket {ticket_id}"},
        ).json()["run_id"]

        def act(tool: str, args: dict[str, Any], **extra: Any) -> Any:
            r = client.post(f"/v1/runs/{run_id}/actions", json={"tool": tool, "args": args, **extra})
            assert r.status_code == 200, r.text
            return r.json()

        ticket = act("get_ticket", {"ticket_id": ticket_id})["result"]
        order = act("lookup_order", {"order_id": ticket["order_id"]})["result"]
        said = {} if rationale is None else {"rationale": rationale}
        answer: dict[str, Any] = act(
            "issue_refund",
            {
                "order_id": order["id"],
                "customer_id": ticket["customer_id"],
                "amount": ticket["requested_amount"],
                "payment_method_id": order["payment_method_id"],
                "reason": ticket["subject"],
            },
            **said,
        )
    assert answer["status"] == "pending", answer
    return answer


def _approve(server: Server, approval_id: str) -> None:
    r = httpx.post(
        f"{server.url}/v1/approvals/{approval_id}/decision",
        headers={"Authorization": "Bearer " + server.keys["lead"]},
        json={"decision": "approve", "rationale": "matches the order"},
    )
    assert r.status_code == 200, r.text


def test_the_approval_shows_the_agents_words_and_a_suggestion(
    chromium: Any, server: Server
) -> None:
    tickets = large_refund_tickets(server.home)
    for ticket in tickets[:3]:  # earlier approvals of the same rule: the history
        _approve(server, _refund(server, ticket, None)["approval_id"])
    stated = (
        f"Ticket {tickets[3]} asks for the full amount back: the parcel never arrived. {INJECTED}"
    )
    made = _refund(server, tickets[3], stated)
    page = open_page(chromium, server, "lead")
    row = page.locator(f"tr[data-id='{made['approval_id']}']")
    assert row.locator(".suggested").inner_text() == "approve"
    page.goto(f"/ui/approvals/{made['approval_id']}")
    said = page.locator("#agent-rationale")
    assert said.locator("blockquote").inner_text() == stated  # text, not markup
    assert said.locator("img").count() == 0
    assert "in its own words" in said.locator("figcaption").inner_text()
    suggestion = page.locator("#suggestion")
    assert "a suggestion: you decide" in suggestion.locator("h2").inner_text()
    assert suggestion.locator(".suggested").inner_text() == "Approve"
    assert suggestion.locator("a[href^='/ui/approvals/apr_']").count() == 3  # the history
    assert "approved 3" in suggestion.inner_text()
    accessible(page)
    shot(page, "approval")
    page.context.close()
