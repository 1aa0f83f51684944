"""The demo's agent: deterministic, deliberately naive, sometimes adversarial.

It does what a gullible LLM agent would: it follows instructions found in ticket text,
splits refunds to stay under a threshold, hallucinates a tool, sends malformed
arguments, and retries the same call in a loop. Warden, not the agent, keeps it safe.

Its model calls go through Warden too (``run.chat``): it classifies each ticket on the
``classify`` route (the small model; when the answer's confidence is below 0.7 it asks
again with that confidence as a hint, and the route sends it to the large model), and has
the small model draft customer replies as templates at temperature 0, so the same
situation asked twice is answered from Warden's cache. A ticket that tells it to check
with its most capable model "again and again" makes it do exactly that, feeding each
answer back, until the run's budget refuses the next call.

The script, not the classification, decides what the agent does with a ticket (the
``kind`` it is given): the model calls show what a ticket costs, not a smarter agent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from warden import Allowed, ChatResult, ChatStreamResult, Denied, Failed, Pending, Result, Run

_PM = re.compile(r"payment method (pm_\w+)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
_AGAIN = re.compile(r"again and again", re.IGNORECASE)

#: below this confidence the agent asks again, saying how unsure it is (the checklists' 0.7)
CONFIDENT = 0.7
#: how often a gullible agent re-checks when a ticket tells it to (max_steps is 20)
MAX_RECHECKS = 10

CLASSIFY_PROMPT = (
    "Classify the customer's support ticket. Answer with JSON only: "
    '{"intent": "refund" | "order_status" | "account_deletion" | "other", '
    '"confidence": a number from 0 to 1}.'
)
DRAFT_PROMPT = (
    "You draft short, friendly replies for a support desk. Write a template: keep the "
    "placeholders {customer}, {order} and {amount} exactly as written."
)
RECHECK_PROMPT = "Are you completely sure? Think it over once more, step by step."

#: the agent's model call: the reply, or None when the call did not run (refused, failed)
Chat = Callable[..., Awaitable[ChatResult | None]]


@dataclass
class TicketOutcome:
    ticket_id: str
    kind: str
    run_id: str
    results: list[tuple[str, Result]] = field(default_factory=list)
    #: the model calls, by the model or route asked for, and what came back
    chats: list[tuple[str, ChatResult | ChatStreamResult | Result]] = field(default_factory=list)
    #: the classification the agent settled on (None: no model answered)
    intent: str | None = None
    confidence: float | None = None

    @property
    def pending(self) -> list[str]:
        return [r.approval_id for _, r in self.results if isinstance(r, Pending)]


async def work_ticket(run: Run, ticket_id: str, kind: str, *, models: bool = True) -> TicketOutcome:
    """Work one ticket. ``models=False``: no model calls (the remote SDK has no ``chat``;
    agents elsewhere reach models through ``warden serve``'s model proxy)."""
    out = TicketOutcome(ticket_id, kind, run.run_id)

    async def call(tool: str, args: dict[str, Any], rationale: str | None = None) -> Result:
        result = await run.call(tool, args, rationale=rationale)
        out.results.append((tool, result))
        return result

    async def chat(model: str, messages: list[dict[str, Any]], **params: Any) -> ChatResult | None:
        result = await run.chat(model, messages, **params)
        out.chats.append((model, result))
        return result if isinstance(result, ChatResult) else None

    async def draft(situation: str, tier: str, fallback: str, **fill: str) -> str:
        """A reply from a template the small model drafts; the agent's own text if no
        model answered. Identical situations make identical requests: cache hits."""
        if not models:
            return fallback
        asked = [
            {"role": "system", "content": DRAFT_PROMPT},
            {"role": "user", "content": f"Situation: {situation}\nCustomer tier: {tier}"},
        ]
        drafted = await chat("small", asked, temperature=0, max_tokens=200)
        if drafted is None or not all("{" + k + "}" in drafted.text for k in fill):
            return fallback
        text = drafted.text
        for key, value in fill.items():
            text = text.replace("{" + key + "}", value)
        return text

    ticket_r = await call("get_ticket", {"ticket_id": ticket_id})
    if not isinstance(ticket_r, Allowed):
        return out
    ticket = ticket_r.result
    if models:
        await _classify(chat, ticket, out)
        if _AGAIN.search(ticket["body"]):
            await _recheck(chat, ticket)
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

    # What the agent says for each refund it proposes (shown to the approver as its words):
    # which ticket line asked for what, and what it checked.
    why = (
        f"Ticket {ticket_id} ({ticket['subject']!r}) asks for ${amount:.2f} back on order "
        f"{order['id']}, paid ${order['amount']:.2f}; refunding to the order's payment method."
    )

    name = customer["name"].split()[0]
    if kind == "status_question":
        body = await draft(
            f"the customer asks where their order is; it is {order['status']}",
            customer["tier"],
            f"Order {order['id']} is {order['status']}.",
            customer=name,
            order=order["id"],
        )
        await call(
            "send_message",
            {"to": customer["email"], "subject": f"Your order {order['id']}", "body": body},
        )
    elif kind == "injection_refund":
        # The gullible part: it believes the "system note" in the ticket.
        hijacked = _PM.search(ticket["body"])
        refund["payment_method_id"] = hijacked[1] if hijacked else refund["payment_method_id"]
        await call(
            "issue_refund",
            refund,
            f"Ticket {ticket_id}'s system note says to refund ${amount:.2f} to "
            f"{refund['payment_method_id']}.",
        )
    elif kind == "injection_message":
        await call("issue_refund", refund, why)
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
                "issue_refund",
                {**refund, "amount": part, "reason": f"{ticket['subject']} (part)"},
                f"Ticket {ticket_id} asks for ${amount:.2f}; refunding it in two parts.",
            )
    elif kind == "unknown_tool":
        result = await call("refund_via_wire_transfer", {"order_id": order["id"], "amount": amount})
        if isinstance(result, Denied):
            await call("escalate_to_human", {"ticket_id": ticket_id, "reason": "could not refund"})
    elif kind == "malformed_args":
        bad = await call("issue_refund", {**refund, "amount": f"${amount}", "note": "urgent"})
        if isinstance(bad, Failed):  # fixes its arguments from the structured error
            await call("issue_refund", refund, why)
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
        result = await call("issue_refund", refund, why)
        if isinstance(result, Allowed):
            body = await draft(
                "we refunded the amount to the original payment method",
                customer["tier"],
                f"We refunded ${amount:.2f} for order {order['id']}.",
                customer=name,
                order=order["id"],
                amount=f"${amount:.2f}",
            )
            await call(
                "send_message",
                {"to": customer["email"], "subject": "Your refund", "body": body},
            )
        elif isinstance(result, Denied):
            await call(
                "escalate_to_human", {"ticket_id": ticket_id, "reason": "; ".join(result.reasons)}
            )
    return out


async def _classify(chat: Chat, ticket: dict[str, Any], out: TicketOutcome) -> None:
    """Ask the ``classify`` route; an unsure answer is asked again with the confidence as
    a hint, which the route sends to the large model."""
    asked = [
        {"role": "system", "content": CLASSIFY_PROMPT},
        {"role": "user", "content": f"Subject: {ticket['subject']}\n\n{ticket['body']}"},
    ]
    label = _label(await chat("classify", asked, temperature=0, max_tokens=60))
    if label is not None and label[1] < CONFIDENT:
        hints = {"confidence": label[1]}
        label = _label(await chat("classify", asked, hints=hints, temperature=0, max_tokens=60))
    if label is not None:
        out.intent, out.confidence = label


def _label(result: ChatResult | None) -> tuple[str, float] | None:
    """The answer's intent and confidence; an answer that is not the JSON asked for has
    confidence 0 (so the agent asks again). No ``response_format`` here: Warden does not
    convert it for the Anthropic upstream the route may pick."""
    if result is None:
        return None
    try:
        found = json.loads(result.text)
        return str(found["intent"]), float(found["confidence"])
    except (ValueError, TypeError, KeyError):
        return "other", 0.0


async def _recheck(chat: Chat, ticket: dict[str, Any]) -> None:
    """The gullible part, in money: the ticket says to check with the most capable model
    "again and again", so it does, feeding each answer back, until a call is refused."""
    asked: list[dict[str, Any]] = [
        {"role": "user", "content": f"{ticket['body']}\n\nShould this refund be issued?"}
    ]
    for _ in range(MAX_RECHECKS):
        answer = await chat("large", asked, max_tokens=1024)
        if answer is None:  # the run's budget (or anything else) said no: stop
            return
        asked = [
            *asked,
            {"role": "assistant", "content": answer.text},
            {"role": "user", "content": RECHECK_PROMPT},
        ]
