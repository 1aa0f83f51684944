"""Property-based fuzzing of the API against its own OpenAPI document (schemathesis).

Every operation gets generated requests — valid and invalid — with an admin key and with
a tenant-scoped agent key. No response may be a 5xx, and every response must match what
/openapi.json declares (status code, content type, body schema).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from _stack import Stack
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_api_never_5xx_and_matches_its_schema(stack: Stack) -> None:
    # Give the fuzzer something to find: a run with a pending approval.
    bot = stack.client("bot")
    run_id = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "fuzz"}).json()[
        "run_id"
    ]
    bot.post(
        f"/v1/runs/{run_id}/actions",
        json={"tool": "pay", "args": {"order_id": "o1", "customer_id": "c1", "amount": 300.0}},
    )
    schema = schemathesis.openapi.from_url(stack.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            for who in ("root", "bot"):
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {stack.keys[who]}"}, checks=CHECKS
                )

        run()
