"""Tool factory for the load benchmark: ``--tools benchmarks/load/tools.py:tools``.

``noop`` is the measured tool: async, no I/O, returns a constant-shaped result. Its
result has no string that varies per call, so the run's provenance memory (saved with the
run after every call) stays the same size however long a run lasts.
"""

from __future__ import annotations

from typing import Any


def tools() -> list[Any]:
    from warden import tool

    @tool
    async def noop(x: int, account: str = "acct_1", region: str = "eu") -> dict[str, Any]:
        return {"ok": True, "x": x}

    @tool
    def lookup_customer(customer_id: str) -> dict[str, str]:
        return {"id": customer_id, "tier": "standard"}

    @tool(effect="write")
    def update_ticket(ticket_id: str, status: str, note: str = "") -> dict[str, str]:
        return {"ticket_id": ticket_id, "status": status}

    @tool(effect="money")
    def issue_refund(order_id: str, amount: float, currency: str = "USD") -> dict[str, Any]:
        return {"order_id": order_id, "refunded": amount}

    @tool(effect="external_message")
    def send_email(to: str, body: str) -> dict[str, str]:
        return {"sent_to": to}

    return [noop, lookup_customer, update_ticket, issue_refund, send_email]
