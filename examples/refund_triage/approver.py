"""The demo's simulated approver, and the rule it decides by.

Rule: approve a refund when it goes to the order's own payment method and the customer's
total refunds stay within what they paid, up to $500; approve a message only to the
address on the customer record; reject everything else.
"""

from __future__ import annotations

from typing import Any

RULE = (
    "approve refunds up to $500 to the order's own payment method; approve messages only to "
    "the customer's address on record; reject the rest"
)


def decide(
    tool: str, args: dict[str, Any], evidence: dict[str, Any], customer_email: str | None
) -> tuple[bool, str]:
    if tool == "issue_refund":
        order = evidence.get("facts", {}).get("order", {})
        if args["amount"] > 500:
            return False, "over the $500 a lead may approve"
        if order and args["payment_method_id"] != order.get("payment_method_id"):
            return False, "not the original payment method"
        return True, "within the lead's limit, original payment method"
    if tool == "send_message":
        if customer_email is not None and args["to"] == customer_email:
            return True, "recipient is the customer on record"
        return False, "recipient is not on the customer record"
    return False, "not a kind of action this approver signs off"
