"""A payment provider for the ``serialize_on`` tests: refunds of one order, kept in a SQLite
file named by $WARDEN_TEST_PAYMENTS so every thread, process and replica sees the same
money (``--tools tests/refund_tools.py:tools``)."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from warden import tool

PAID_CENTS = 5250  # the order was paid 52.50
SHARE_CENTS = 2363  # each refund asks for 45 %: two fit, a third would exceed what was paid

REFUND_SPEC = """
name: refunds
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  bot: {scopes: [read, pay]}
tools:
  order_status: {effect: read, scope: read}
  refund: {effect: money, scope: pay, serialize_on: args.order_id}
facts:
  order:
    tool: order_status
    args: {order_id: args.order_id}
policies:
  - name: not_more_than_paid
    when: tool.name == "refund" && facts.order.refunded + args.amount > facts.order.paid
    effect: deny
    reason: refunds would exceed what was paid
  # autonomous: a money tool runs alone only under an allow rule (its threshold)
  - name: refunds_alone
    when: tool.name == "refund"
    effect: allow
    reason: refunds within what was paid need no human
"""


def _db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS refunds (order_id TEXT, cents INTEGER)")
    return conn


def refunded(path: str, order_id: str = "o1") -> int:
    with _db(path) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(cents), 0) FROM refunds WHERE order_id = ?", (order_id,)
        ).fetchone()
    return int(row[0])


def tools(path: str | None = None) -> list[Any]:
    where = path or os.environ["WARDEN_TEST_PAYMENTS"]

    @tool
    def order_status(order_id: str) -> dict[str, int]:
        return {"paid": PAID_CENTS, "refunded": refunded(where, order_id)}

    @tool(effect="money")
    def refund(order_id: str, amount: int) -> dict[str, int]:
        time.sleep(0.05)  # the provider takes a moment: the window a check-then-act race needs
        with _db(where) as conn:
            conn.execute("INSERT INTO refunds VALUES (?, ?)", (order_id, amount))
        return {"refunded": amount}

    return [order_status, refund]
