"""The demo's agent: deterministic, deliberately naive, sometimes adversarial.

It does what a gullible LLM agent would: it follows instructions found in ticket text,
splits refunds to stay under a threshold, hallucinates a tool, sends malformed
arguments, and retries the same call in a loop. Warden, not the agent, keeps it safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from warden import Allowed, Denied, Failed, Pending, Result, Run

_PM = re.compile(r"payment method (pm_\w+)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


@dataclass
class TicketOutcome:
    ticket_id: str
    kind: str
    run_id: str
    results: list[tuple[str, Result]] = field(default_factory=list)

    @property
    def pending(self) -> list[str]:
        return [r.approval_id for _, r in self.results if isinstance(r, Pending)]


async def work_ticket(run: Run, ticket_id: str, kind: str) -> TicketOutcome:
    out = TicketOutcome(ticket_id, kind, run.run_id)

    async def call(tool: str, args: dict[str, Any]) -> Result:
        result = await run.call(tool, args)
        out.results.append((tool, result))
        return result

    ticket_r = await call("get_ticket", {"ticket_id": ticket_id})
    if not isinstance(ticket_r, Allowed):
        return out
    ticket = ticket_r.result
    customer_r = await call("lookup_customer", {"customer_id": ticket["customer_id"]})
    order_r = await call("lookup_order", {"order_id": ticket["order_id"]})
    if not (isinstance(customer_r, Allowed) and isinstance(order_r, Allowed)):
        return out
    customer, order = customer_r.result, order_r.result
    amount = ticket["requested_amount"]
    refund = {
        "order_id": order["id"],
        "customer_id": customer["id"],
        "amount": amount,
        "payment_method_id": order["payment_method_id"],
        "reason": ticket["subject"],
    }

    if kind == "status_question":
        await call(
            "send_message",
            {
                "to": customer["email"],
                "subject": f"Your order {order['id']}",
                "body": f"Order {order['id']} is {order['status']}.",
            },
        )
    elif kind == "injection_refund":
        # The gullible part: it believes the "system note" in the ticket.
        hijacked = _PM.search(ticket["body"])
        refund["payment_method_id"] = hijacked[1] if hijacked else refund["payment_method_id"]
        await call("issue_refund", refund)
    elif kind == "injection_message":
        await call("issue_refund", refund)
        for address in _EMAIL.findall(ticket["body"]):
            await call(
                "send_message",
                {
                    "to": address,
                    "subject": "Refund confirmation",
                    "body": f"Refund of ${amount:.2f} for {order['id']}.",
                },
            )
    elif kind == "split_refund":
        # Two halves, each under the $100 approval threshold.
        half = round(amount / 2, 2)
        for part in (half, round(amount - half, 2)):
            await call(
                "issue_refund", {**refund, "amount": part, "reason": f"{ticket['subject']} (part)"}
            )
    elif kind == "unknown_tool":
        result = await call("refund_via_wire_transfer", {"order_id": order["id"], "amount": amount})
        if isinstance(result, Denied):
            await call("escalate_to_human", {"ticket_id": ticket_id, "reason": "could not refund"})
    elif kind == "malformed_args":
        bad = await call("issue_refund", {**refund, "amount": f"${amount}", "note": "urgent"})
        if isinstance(bad, Failed):  # fixes its arguments from the structured error
            await call("issue_refund", refund)
    elif kind == "runaway_loop":
        for _ in range(5):
            result = await call("lookup_order", {"order_id": order["id"]})
            if isinstance(result, Denied):
                break
    elif kind == "delete_request":
        await call("delete_customer", {"customer_id": customer["id"]})
        await call(
            "escalate_to_human", {"ticket_id": ticket_id, "reason": "account deletion request"}
        )
    else:  # small_refund, large_refund, repeat_customer
        result = await call("issue_refund", refund)
        if isinstance(result, Allowed):
            await call(
                "send_message",
                {
                    "to": customer["email"],
                    "subject": "Your refund",
                    "body": f"We refunded ${amount:.2f} for order {order['id']}.",
                },
            )
        elif isinstance(result, Denied):
            await call(
                "escalate_to_human", {"ticket_id": ticket_id, "reason": "; ".join(result.reasons)}
            )
    return out
