"""The approver's view over HTTP: approvers and auditors see the raw arguments of the
action to decide, each view recorded; other keys see tokens."""

from __future__ import annotations

from typing import Any

import httpx
from _stack import Stack

from warden.store import Store
from warden.telemetry import Vault

MALLORY = "mallory@evil.example"  # what the shop's get_doc returns in its text


def _pending_message(stack: Stack) -> str:
    bot = stack.client("bot")
    r = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "mail"})
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]

    def act(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        done = bot.post(f"/v1/runs/{run_id}/actions", json={"tool": tool, "args": args})
        assert done.status_code == 200, done.text
        body: dict[str, Any] = done.json()
        return body

    act("get_doc", {"doc_id": "d1"})
    pending = act("message", {"to": MALLORY, "body": "the invoice"})
    assert pending["status"] == "pending", pending
    approval_id: str = pending["approval_id"]
    return approval_id


def _to(client: httpx.Client, approval_id: str) -> str:
    r = client.get(f"/v1/approvals/{approval_id}")
    assert r.status_code == 200, r.text
    to: str = r.json()["args"]["to"]
    return to


def test_approvers_and_auditors_see_raw_args_and_each_view_is_recorded(stack: Stack) -> None:
    approval_id = _pending_message(stack)
    assert _to(stack.client("lead"), approval_id) == MALLORY
    assert _to(stack.client("audit"), approval_id) == MALLORY
    assert _to(stack.client("acme-admin"), approval_id) == MALLORY  # an admin that approves
    listed = stack.client("lead").get("/v1/approvals").json()["items"]
    assert [a["args"]["to"] for a in listed] == [MALLORY]

    # keys that do not decide see the token the ledger holds
    for who in ("root", "bot"):
        assert _to(stack.client(who), approval_id).startswith("pii:email:")
    assert MALLORY not in stack.client("root").get("/v1/approvals").text

    store = Store(stack.store_url)
    try:
        reads = Vault(store).reads("acme")
    finally:
        store.dispose()
    seen = sorted((r.reader, r.role, r.purpose) for r in reads)
    assert seen == [
        ("key:acme-admin", "admin", "approval view"),
        ("key:audit", "auditor", "approval view"),
        ("key:lead", "approver", "approval list"),
        ("key:lead", "approver", "approval view"),
    ]
    assert {r.ref for r in reads} == {f"approval:{approval_id}"}


def test_the_decision_answers_the_approver_raw_and_execution_uses_raw_args(stack: Stack) -> None:
    approval_id = _pending_message(stack)
    lead = stack.client("lead")
    decided = lead.post(
        f"/v1/approvals/{approval_id}/decision",
        json={"decision": "approve", "rationale": "checked with the customer"},
    )
    assert decided.status_code == 200 and decided.json()["args"]["to"] == MALLORY
    done = stack.client("bot").post(f"/v1/approvals/{approval_id}/execute").json()
    assert done["status"] == "allowed", done
    # what the tool returned reached the agent as it is; the ledger holds its token
    assert done["result"] == {"sent_to": MALLORY}
    assert stack.effect_count("sent") == 1
