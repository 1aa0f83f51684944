"""Holes of issue 7 §1 seen through the HTTP control plane (served in process)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from server_tools import count_effects
from test_server_identity import PAY_300, Api, _act, _open, api, make_api, serve  # noqa: F401

SWITCHES = [("global", None), ("tenant", "acme"), ("workflow", "shop"), ("tool", "pay")]


@pytest.mark.parametrize(("scope", "target"), SWITCHES)
async def test_a_switch_stops_an_approved_payment_executed_over_http(
    api: Api,  # noqa: F811 (the fixture imported above)
    scope: str,
    target: str | None,
) -> None:
    bot = api.as_("bot", "agent", agent="bot")
    lead = api.as_("lead", "approver", approval_roles=["lead"])
    root = api.as_("root", "admin", tenant="*")
    run_id = await _open(bot)
    pending = await _act(bot, run_id, "pay", PAY_300)
    assert pending["status"] == "pending"
    approval = pending["approval_id"]
    r = await lead.post(
        f"/v1/approvals/{approval}/decision", json={"decision": "approve", "rationale": "ok"}
    )
    assert r.status_code == 200, r.text
    on = {"scope": scope, "target": target, "active": True, "reason": "incident"}
    assert (await root.post("/v1/switches", json=on)).status_code in (200, 201)

    executed = (await bot.post(f"/v1/approvals/{approval}/execute")).json()
    assert (executed["status"], executed["kind"]) == ("denied", "killed")
    assert (await lead.get(f"/v1/approvals/{approval}")).json()["state"] == "approved"
    assert count_effects(os.environ["WARDEN_TEST_EFFECTS"], "paid") == 0

    off = {**on, "active": False, "reason": "resolved"}
    assert (await root.post("/v1/switches", json=off)).status_code in (200, 201)
    executed = (await bot.post(f"/v1/approvals/{approval}/execute")).json()
    assert executed["status"] == "allowed"
    assert count_effects(os.environ["WARDEN_TEST_EFFECTS"], "paid") == 1


async def test_a_switch_turned_off_over_http_lets_the_next_call_run_at_once(
    serve: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    """One board per server process: the check just before the side effect reads the same
    view as the switch stage, not a second board a re-read behind (CI saw the approved
    payment of the test above fail as ``killed`` after the switch was off)."""
    server = await serve(switch_refresh_s=1.0)
    bot = server.as_("bot", "agent", agent="bot")
    root = server.as_("root", "admin", tenant="*")
    run_id = await _open(bot)
    small = {**PAY_300, "amount": 10.0}
    assert (await _act(bot, run_id, "pay", small))["status"] == "allowed"
    on = {"scope": "tool", "target": "pay", "active": True, "reason": "incident"}
    assert (await root.post("/v1/switches", json=on)).status_code in (200, 201)
    await asyncio.sleep(1.3)  # every re-read in the process has seen the switch
    killed = await _act(bot, run_id, "pay", {**small, "order_id": "o2"})
    assert (killed["status"], killed["kind"]) == ("denied", "killed")
    off = {**on, "active": False, "reason": "resolved"}
    assert (await root.post("/v1/switches", json=off)).status_code in (200, 201)
    paid = await _act(bot, run_id, "pay", {**small, "order_id": "o3"})
    assert paid["status"] == "allowed", paid
    assert count_effects(os.environ["WARDEN_TEST_EFFECTS"], "paid") == 2


async def test_the_server_signs_checkpoints_periodically(
    serve: Any,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    from warden.ledger import generate_key, load_public_key, read_checkpoint_file, verify

    private, public = generate_key(tmp_path / "ledger.key")
    out = tmp_path / "checkpoints.jsonl"
    server = await serve(ledger_key=str(private), checkpoint_s=0.1, checkpoint_file=str(out))
    bot = server.as_("bot", "agent", agent="bot")
    run_id = await _open(bot)
    assert (await _act(bot, run_id, "get_order", {"order_id": "o1"}))["status"] == "allowed"
    server.app.state.warden.gateway("shop").flush()
    for _ in range(100):  # the loop signs within a few ticks of 0.1 s
        if out.exists() and read_checkpoint_file(out):
            break
        await asyncio.sleep(0.1)
    checkpoints = read_checkpoint_file(out)
    assert checkpoints
    report = verify(server.app.state.warden.store, public_key=load_public_key(public))
    assert report.ok and report.checkpoints >= 1 and report.key_pinned
