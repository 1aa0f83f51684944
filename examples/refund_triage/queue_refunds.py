"""Put refunds in the approval queue of a running `warden serve`, for the console (/ui).

    warden serve &                                               # the demo workflow
    KEY=$(warden keys create --role agent --name bot --tenant acme --agent refund-bot | tail -1)
    python examples/refund_triage/queue_refunds.py --api-key $KEY --count 5

Works demo tickets as the demo agent does (read the ticket, look up the customer and the
order, refund what the ticket asks, saying why in one line) until ``--count`` refunds over $100 wait for a
support lead. Their runs are left open: an approval is cancelled when its run finishes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx


def _act(
    client: httpx.Client,
    run_id: str,
    tool: str,
    args: dict[str, Any],
    rationale: str | None = None,
) -> Any:
    body: dict[str, Any] = {"tool": tool, "args": args}
    if rationale is not None:
        body["rationale"] = rationale  # the agent's own words, shown to the approver
    r = client.post(f"/v1/runs/{run_id}/actions", json=body)
    r.raise_for_status()
    return r.json()


def main(url: str, api_key: str, count: int) -> int:
    queued = 0
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as client:
        for n in range(200):
            if queued == count:
                break
            ticket_id = f"tkt_{n:05d}"
            r = client.post(
                "/v1/runs",
                json={
                    "workflow": "refund_triage",
                    "agent": "refund-bot",
                    "task": f"ticket {ticket_id}",
                    "task_type": "refund_request",
                },
            )
            r.raise_for_status()
            run_id = r.json()["run_id"]
            ticket = _act(client, run_id, "get_ticket", {"ticket_id": ticket_id})["result"]
            if ticket["requested_amount"] <= 100:
                client.post(f"/v1/runs/{run_id}/finish", json={"outcome": "abandoned"})
                continue
            customer = _act(
                client, run_id, "lookup_customer", {"customer_id": ticket["customer_id"]}
            )["result"]
            order = _act(client, run_id, "lookup_order", {"order_id": ticket["order_id"]})["result"]
            answer = _act(
                client,
                run_id,
                "issue_refund",
                {
                    "order_id": order["id"],
                    "customer_id": customer["id"],
                    "amount": ticket["requested_amount"],
                    "payment_method_id": order["payment_method_id"],
                    "reason": ticket["subject"],
                },
                f"Ticket {ticket_id} ({ticket['subject']!r}) asks for "
                f"${ticket['requested_amount']:.2f} back on order {order['id']}, paid "
                f"${order['amount']:.2f}; refunding to the order's payment method.",
            )
            print(f"{ticket_id} refund {ticket['requested_amount']:>8.2f} {answer['status']} "
                  f"{answer.get('approval_id') or ''}")
            queued += answer["status"] == "pending"
    return 0 if queued == count else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--count", type=int, default=5)
    args = parser.parse_args()
    sys.exit(main(args.url, args.api_key, args.count))
