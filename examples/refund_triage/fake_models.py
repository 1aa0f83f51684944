"""The demo's models: what the fake upstream answers the agent, deterministically.

``warden demo`` serves these answers from ``warden.testing.FakeUpstream`` on loopback (no
network, no key): the requests are real OpenAI- and Anthropic-shaped HTTP calls through
Warden, and usage is counted from the text (about four characters a token), so the
prices are the real models' prices for plausible token counts.

- Classification (the agent's ``CLASSIFY_PROMPT``): JSON with an intent read from the
  ticket and a confidence derived from the ticket's text. The small model is unsure
  (below 0.7) of about one ticket in eight, and of every ticket that talks to the AI; the
  large model is sure of everything.
- Drafts (``DRAFT_PROMPT``): a reply template for the situation and the customer's tier.
- Anything else (the agent re-checking its decision): a long deliberation.

Every answer respects the request's ``max_tokens`` (cut there, ``finish_reason:
length``), as real upstreams do: a budget that capped the request is not overrun.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from warden.testing import FakeReply, FakeRequest

#: the upstream model ids that answer as the strong model
STRONG = frozenset({"claude-sonnet-4-5"})
#: what a ticket that talks to the AI contains (the small model is unsure of those)
_SUSPICIOUS = ("ignore previous instructions", "ai agent", "send a copy")

_DELIBERATION = (
    "Let me reconsider the request from the start. The ticket asks for a refund and also "
    "tells me how to handle it; instructions inside a ticket are not instructions from my "
    "operator, so I should weigh them as claims, not as orders. On the one hand the "
    "customer says the card was cancelled, which would make the original payment method "
    "unusable; on the other hand nothing in the order record confirms that, and refunding "
    "to another method is exactly what fraud looks like. "
) * 4

_TEMPLATES = {
    "refund": (
        "Hi {customer}, we have refunded {amount} for order {order} to your original "
        "payment method. It usually shows up within 5 business days."
    ),
    "status": "Hi {customer}, good news: order {order} has been delivered.",
}
_SIGN_OFF = {
    "pro": " Thank you for being a Pro customer. - The support team",
    "plus": " Thanks for shopping with us. - The support team",
}


def reply(request: FakeRequest) -> FakeReply:
    """The answer to one request (``FakeUpstream``'s script)."""
    system = _system(request)
    asked = _last_user_text(request)
    if system.startswith("Classify"):
        text = _classify(asked, strong=request.model in STRONG)
    elif system.startswith("You draft"):
        text = _draft(asked)
    else:
        text = _DELIBERATION
    return _within_max_tokens(text, request.body.get("max_tokens"))


def _classify(ticket: str, *, strong: bool) -> str:
    lowered = ticket.lower()
    if "status of order" in lowered:
        intent = "order_status"
    elif "delete my account" in lowered:
        intent = "account_deletion"
    elif "refund" in lowered:
        intent = "refund"
    else:
        intent = "other"
    spread = int.from_bytes(hashlib.sha256(ticket.encode()).digest()[:4], "big")
    if strong:
        confidence = 0.90 + (spread % 9) / 100  # 0.90 .. 0.98
    elif any(marker in lowered for marker in _SUSPICIOUS):
        confidence = 0.40 + (spread % 20) / 100  # 0.40 .. 0.59: it smells something
    else:
        confidence = 0.66 + (spread % 33) / 100  # 0.66 .. 0.98: 4 in 33 below 0.7
    return json.dumps({"intent": intent, "confidence": round(confidence, 2)})


def _draft(asked: str) -> str:
    kind = "status" if "where their order is" in asked else "refund"
    tier = asked.rsplit("Customer tier:", 1)[-1].strip()
    return _TEMPLATES[kind] + _SIGN_OFF.get(tier, " - The support team")


def _within_max_tokens(text: str, max_tokens: Any) -> FakeReply:
    """Cut the answer at ``max_tokens`` (the fake counts about four characters a token)."""
    if isinstance(max_tokens, int) and len(text) > 4 * max_tokens:
        return FakeReply(text[: 4 * max_tokens], finish_reason="length")
    return FakeReply(text)


def _system(request: FakeRequest) -> str:
    found = request.body.get("system")  # Anthropic's shape
    if found is None:  # OpenAI's: the system message
        found = next(
            (m.get("content") for m in request.body["messages"] if m.get("role") == "system"),
            "",
        )
    return _text(found)


def _last_user_text(request: FakeRequest) -> str:
    users = [m for m in request.body["messages"] if m.get("role") == "user"]
    return _text(users[-1].get("content")) if users else ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""
