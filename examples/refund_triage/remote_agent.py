"""The demo agent, in its own process, against `warden serve` through the remote SDK.

    warden serve &                                               # the demo workflow
    KEY=$(warden keys create --role agent --name bot --tenant acme --agent refund-bot | tail -1)
    python examples/refund_triage/remote_agent.py --url http://127.0.0.1:8000 --api-key $KEY

Works a few tickets with the same agent code as the in-process demo and prints each
governed call's outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from warden import Allowed, Denied, Failed, Gateway, Pending

sys.path.insert(0, str(Path(__file__).parent))
from agent import work_ticket


async def main(url: str, api_key: str, tickets: list[tuple[str, str]]) -> int:
    async with Gateway.connect(url, api_key=api_key, workflow="refund_triage") as gateway:
        for ticket_id, kind in tickets:
            async with gateway.run(
                agent="refund-bot", task=f"ticket {ticket_id}", task_type="refund_request"
            ) as run:
                # No model calls: the remote SDK has no `chat` (point an OpenAI or
                # Anthropic client at warden serve's model proxy instead).
                outcome = await work_ticket(run, ticket_id, kind, models=False)  # type: ignore[arg-type]
            for tool, result in outcome.results:
                match result:
                    case Allowed():
                        verdict = "allowed"
                    case Pending(approval_id=a):
                        verdict = f"pending {a}"
                    case Denied(kind=k):
                        verdict = f"denied {k.value}"
                    case Failed(kind=k):
                        verdict = f"failed {k.value}"
                    case _:
                        verdict = type(result).__name__
                print(f"{ticket_id} {kind:<18} {tool:<26} {verdict}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    demo = [
        ("tkt_00000", "small_refund"),
        ("tkt_00001", "large_refund"),
        ("tkt_00002", "unknown_tool"),
    ]
    sys.exit(asyncio.run(main(args.url, args.api_key, demo)))
