"""Demo-like data for the console's tests: pending refunds over the /v1 API.

Used by the fast tests (httpx over ASGITransport) and by the browser tests (a real
``warden serve``): the same agent calls the demo's agent makes, against the demo helpdesk
that ``warden serve`` seeds under ``./.warden/helpdesk.db``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx


def large_refund_tickets(cwd: Path) -> list[str]:
    """The demo helpdesk's tickets that ask for more than $100 (seeded by the server)."""
    with sqlite3.connect(cwd / ".warden" / "helpdesk.db") as conn:
        rows = conn.execute(
            "SELECT id FROM tickets WHERE kind = 'large_refund' ORDER BY id"
        ).fetchall()
    return [str(r[0]) for r in rows]


async def _act(client: httpx.AsyncClient, run_id: str, tool: str, args: dict[str, Any]) -> Any:
    r = await client.post(f"/v1/runs/{run_id}/actions", json={"tool": tool, "args": args})
    assert r.status_code == 200, r.text
    return r.json()


async def refund_run(
    client: httpx.AsyncClient, ticket_id: str, reason: str | None = None
) -> dict[str, Any]:
    """One ticket worked as the demo agent does; returns the refund call's answer.
    ``reason``: the refund's reason instead of the ticket's subject."""
    r = await client.post(
        "/v1/runs",
        json={
            "workflow": "refund_triage",
            "agent": "refund-bot",
            "task": f"ticket {ticket_id}",
            "task_type": "refund_request",
        },
    )
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    ticket = (await _act(client, run_id, "get_ticket", {"ticket_id": ticket_id}))["result"]
    customer = (
        await _act(client, run_id, "lookup_customer", {"customer_id": ticket["customer_id"]})
    )["result"]
    order = (await _act(client, run_id, "lookup_order", {"order_id": ticket["order_id"]}))[
        "result"
    ]
    answer: dict[str, Any] = await _act(
        client,
        run_id,
        "issue_refund",
        {
            "order_id": order["id"],
            "customer_id": customer["id"],
            "amount": ticket["requested_amount"],
            "payment_method_id": order["payment_method_id"],
            "reason": ticket["subject"] if reason is None else reason,
        },
    )
    answer["run_id"] = run_id
    return answer
