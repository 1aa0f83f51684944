"""Holes of issue 7 §1 seen through the HTTP control plane (served in process)."""

from __future__ import annotations

import os

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
