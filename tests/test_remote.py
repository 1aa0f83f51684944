"""The SDK's remote mode and the approver CLI, against a real server on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest
from _stack import Stack

from warden import Allowed, Denied, Failed, FailureKind, Gateway, NotFoundError, Pending
from warden.remote import RemoteError


async def test_remote_run_has_the_same_typed_results(stack: Stack) -> None:
    async with Gateway.connect(stack.url, api_key=stack.keys["bot"], workflow="shop") as gateway:
        async with gateway.run(agent="bot", task="remote") as run:
            read = await run.call("get_order", {"order_id": "o1"})
            bad = await run.call("save", {"key": 1})
            ghost = await run.call("teleport")
            pending = await run.call(
                "pay", {"order_id": "o1", "customer_id": "c1", "amount": 250.0}
            )
    assert isinstance(read, Allowed) and read.result["customer_id"] == "c1"
    assert isinstance(bad, Failed) and bad.kind is FailureKind.SCHEMA_ERROR and bad.errors[0].path
    assert isinstance(ghost, Denied) and ghost.kind is FailureKind.UNKNOWN_TOOL
    assert isinstance(pending, Pending) and pending.role == "lead"
    # a pending result names the rules that asked, as a denial does
    assert pending.rules == ("big_pay_needs_approval",) and pending.reasons == ("big payment",)


async def test_remote_wait_long_polls_until_an_approver_decides(stack: Stack) -> None:
    async def approver() -> None:
        async with httpx.AsyncClient(
            base_url=stack.url, headers={"Authorization": f"Bearer {stack.keys['lead']}"}
        ) as c:
            while True:
                items = (await c.get("/v1/approvals")).json()["items"]
                if items:
                    break
                await asyncio.sleep(0.05)
            await c.post(
                f"/v1/approvals/{items[0]['approval_id']}/decision",
                json={"decision": "approve", "rationale": "remote ok"},
            )

    async with Gateway.connect(stack.url, api_key=stack.keys["bot"], workflow="shop") as gateway:
        async with gateway.run(agent="bot", task="waits") as run:
            task = asyncio.create_task(approver())
            result = await run.call(
                "pay", {"order_id": "o1", "customer_id": "c1", "amount": 400.0}, wait=20
            )
            await task
    assert isinstance(result, Allowed) and result.result["paid"] == 400.0
    assert stack.effect_count("paid") == 1


async def test_remote_rejection_and_errors(stack: Stack) -> None:
    async with Gateway.connect(stack.url, api_key=stack.keys["bot"], workflow="shop") as gateway:
        async with gateway.run(agent="bot", task="rejected") as run:
            pending = await run.call(
                "pay", {"order_id": "o1", "customer_id": "c1", "amount": 400.0}
            )
            assert isinstance(pending, Pending)
            async with Gateway.connect(stack.url, api_key=stack.keys["lead"]) as lead:
                await lead.reject(pending.approval_id, rationale="no")
            result = await gateway.execute_approved(pending.approval_id)
        assert isinstance(result, Denied) and result.kind is FailureKind.APPROVAL_REJECTED
        with pytest.raises(NotFoundError):
            await gateway.execute_approved("apr_missing")
    async with Gateway.connect(stack.url, api_key="wdn_bad_key", workflow="shop") as bad:
        with pytest.raises(RemoteError) as info:
            async with bad.run(agent="bot", task="x"):
                pass
    assert info.value.status == 401


def test_approver_cli_against_the_server(stack: Stack) -> None:
    bot = stack.client("bot")
    run_id = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "cli"}).json()[
        "run_id"
    ]
    pending = bot.post(
        f"/v1/runs/{run_id}/actions",
        json={"tool": "pay", "args": {"order_id": "o1", "customer_id": "c1", "amount": 120.0}},
    ).json()
    env = {"WARDEN_URL": stack.url, "WARDEN_API_KEY": stack.keys["lead"], "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "warden", "approvals", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    listed = cli("list")
    assert listed.returncode == 0 and pending["approval_id"] in listed.stdout
    shown = cli("show", pending["approval_id"])
    assert shown.returncode == 0 and "big payment" in shown.stdout
    approved = cli("approve", pending["approval_id"], "--rationale", "via terminal")
    assert approved.returncode == 0 and "approved by key:lead" in approved.stdout
    again = cli("reject", pending["approval_id"], "--rationale", "too late")
    assert again.returncode == 1 and "not pending" in again.stderr
    executed = bot.post(f"/v1/approvals/{pending['approval_id']}/execute").json()
    assert executed["status"] == "allowed"
