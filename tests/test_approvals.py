"""Approvals: pending actions survive restarts, are decided once, execute exactly once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import SLA_SPEC, Effects, make_gateway

from warden import Allowed, Denied, FailureKind, Gateway, Pending, UsageError
from warden.errors import SpecError
from warden.ledger import iter_events
from warden.spec import load_spec_text


async def _pending_payment(gateway: Gateway, amount: float = 250.0) -> Pending:
    # The run stays open: finishing it would cancel its pending approvals.
    run = gateway.open_run(tenant="t", agent="bot", task="big pay")
    result = await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": amount})
    assert isinstance(result, Pending), result
    return result


async def test_approval_records_the_exact_action_and_why(gateway: Gateway) -> None:
    pending = await _pending_payment(gateway)
    record = gateway.approvals.get(pending.approval_id)
    assert record.state == "pending" and record.role == "lead"
    assert record.args == {"order_id": "o1", "customer_id": "c1", "amount": 250.0}
    assert record.reasons == ["big payment"] and record.rules == ["big_pay_needs_approval"]
    assert record.evidence["facts"]["order"]["customer_id"] == "c1"
    assert record.risk == 0.5
    assert record.deadline - record.created_at == timedelta(minutes=15)


async def test_approve_then_execute_once(gateway: Gateway, effects: Effects) -> None:
    pending = await _pending_payment(gateway)
    await gateway.approve(pending.approval_id, approver="lead@x", roles=["lead"], rationale="fine")
    first = await gateway.execute_approved(pending.approval_id)
    second = await gateway.execute_approved(pending.approval_id)
    assert isinstance(first, Allowed) and not first.replayed
    assert isinstance(second, Allowed) and second.replayed and second.result == first.result
    assert len(effects.paid) == 1
    assert gateway.approvals.get(pending.approval_id).state == "executed"


async def test_reject_records_and_denies(gateway: Gateway, effects: Effects) -> None:
    pending = await _pending_payment(gateway)
    await gateway.reject(pending.approval_id, approver="lead@x", roles=["lead"], rationale="suspicious")
    result = await gateway.execute_approved(pending.approval_id)
    assert isinstance(result, Denied) and result.kind is FailureKind.APPROVAL_REJECTED
    assert effects.paid == []
    gateway.flush()
    types = [e.type for e in iter_events(gateway.store, tenant="t")]
    assert "approval_decided" in types


async def test_decisions_are_single_use_and_need_another_identity(gateway: Gateway) -> None:
    pending = await _pending_payment(gateway)
    with pytest.raises(UsageError, match="cannot approve"):
        await gateway.approve(pending.approval_id, approver="bot", roles=["lead"], rationale="self-approval")
    await gateway.approve(pending.approval_id, approver="lead@x", roles=["lead"], rationale="ok")
    with pytest.raises(UsageError, match="not pending"):
        await gateway.reject(pending.approval_id, approver="other@x", roles=["lead"], rationale="too late")


async def test_edit_is_revalidated_and_reevaluated(gateway: Gateway, effects: Effects) -> None:
    pending = await _pending_payment(gateway)
    with pytest.raises(UsageError, match="do not fit"):
        await gateway.approve(
            pending.approval_id, approver="lead@x", roles=["lead"], rationale="x", args={"amount": "lots"}
        )
    with pytest.raises(UsageError, match="denied by policy"):
        await gateway.approve(
            pending.approval_id,
            approver="lead@x", roles=["lead"],
            rationale="x",
            args={"order_id": "o-bob", "customer_id": "c1", "amount": 50.0},
        )
    assert gateway.approvals.get(pending.approval_id).state == "pending"
    record = await gateway.approve(
        pending.approval_id,
        approver="lead@x", roles=["lead"],
        rationale="partial refund",
        args={"order_id": "o1", "customer_id": "c1", "amount": 80.0},
    )
    assert record.state == "approved" and record.args["amount"] == 80.0
    result = await gateway.execute_approved(pending.approval_id)
    assert isinstance(result, Allowed)
    assert effects.paid == [{"order_id": "o1", "amount": 80.0}]


async def test_wait_returns_after_a_decision_in_the_meantime(
    gateway: Gateway, effects: Effects
) -> None:
    import asyncio

    async def approver() -> None:
        while not gateway.approvals.list(state="pending"):
            await asyncio.sleep(0.01)
        record = gateway.approvals.list(state="pending")[0]
        await gateway.approve(record.approval_id, approver="lead@x", roles=["lead"], rationale="quick")

    async with gateway.run(tenant="t", agent="bot", task="wait") as run:
        task = asyncio.create_task(approver())
        result = await run.call(
            "pay", {"order_id": "o1", "customer_id": "c1", "amount": 300.0}, wait=5
        )
        await task
    assert isinstance(result, Allowed) and len(effects.paid) == 1


async def test_timeout_escalates_then_denies(store_url: str, effects: Effects) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    gw = make_gateway(store_url, effects, clock=lambda: now[0])
    pending = await _pending_payment(gw)
    now[0] += timedelta(minutes=16)
    escalated = gw.expire_overdue()
    assert [r.role for r in escalated] == ["manager"]
    now[0] += timedelta(minutes=16)
    expired = gw.expire_overdue()
    assert [r.state for r in expired] == ["expired"]
    result = await gw.execute_approved(pending.approval_id)
    assert isinstance(result, Denied) and result.kind is FailureKind.APPROVAL_TIMEOUT
    gw.close()
    assert effects.paid == []


async def test_sla_class_from_the_rule_sets_deadline_escalation_and_queue_order(
    store_url: str, effects: Effects
) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    gw = make_gateway(store_url, effects, SLA_SPEC, clock=lambda: now[0])
    routine = await _pending_payment(gw, 250.0)  # big_pay_needs_approval: routine (24 h)
    now[0] += timedelta(minutes=1)
    urgent = await _pending_payment(gw, 5000.0)  # both rules match: the urgent class wins
    assert routine.deadline == datetime(2026, 1, 2, tzinfo=UTC)
    assert urgent.deadline == datetime(2026, 1, 1, 0, 6, tzinfo=UTC)
    queue = gw.approvals.list(state="pending")
    assert [(r.approval_id, r.sla_class) for r in queue] == [
        (urgent.approval_id, "urgent"),
        (routine.approval_id, "routine"),
    ]
    assert [r.approval_id for r in gw.approvals.list(sla_class="routine")] == [
        routine.approval_id
    ]
    now[0] += timedelta(minutes=6)  # the urgent one is overdue; the routine one is not
    escalated = gw.expire_overdue()
    assert [(r.approval_id, r.role) for r in escalated] == [(urgent.approval_id, "manager")]
    assert escalated[0].deadline == now[0] + timedelta(minutes=5)  # the next role: 5 min too
    events = [e.type for e in iter_events(gw.store, run_id=escalated[0].run_id)]
    assert "approval_escalated" in events
    gw.close()


def test_rule_naming_an_undeclared_sla_class_is_a_spec_error() -> None:
    bad = SLA_SPEC.replace("sla: urgent", "sla: urgnet", 1)
    with pytest.raises(SpecError) as info:
        load_spec_text(bad, "shop.yaml")
    text = str(info.value)
    assert "sla" in text and "urgnet" in text and "urgent" in text


SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path.insert(0, {tests!r})
    from conftest import Effects, make_gateway
    from warden import Allowed

    effects = Effects()
    gw = make_gateway({url!r}, effects)
    mode = sys.argv[1]

    async def main():
        if mode == "request":
            run = gw.open_run(tenant="t", agent="bot", task="restart")  # left open: pending
            r = await run.call("pay", {{"order_id": "o1", "customer_id": "c1", "amount": 400.0}})
            print(r.approval_id)
        else:
            if mode == "approve":
                await gw.approve(sys.argv[2], approver="lead@x", roles=["lead"], rationale="after restart")
            r = await gw.execute_approved(sys.argv[2])
            print(json.dumps({{"allowed": isinstance(r, Allowed), "replayed": getattr(r, "replayed", None),
                               "paid": len(effects.paid)}}))
        gw.close()

    asyncio.run(main())
    """
)


def test_pending_approval_survives_restart_and_executes_once(
    store_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "proc.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), url=store_url))

    def proc(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    approval_id = proc("request")  # process 1 asks and exits
    first = proc("approve", approval_id)  # process 2: approves and executes
    again = proc("execute", approval_id)  # process 3: tries again
    assert first == '{"allowed": true, "replayed": false, "paid": 1}'
    assert again == '{"allowed": true, "replayed": true, "paid": 0}'


async def test_approval_requests_are_bounded_per_run(store_url: str, effects: Effects) -> None:
    spec_text = __import__("conftest").SPEC.replace(
        "on_timeout: escalate", "on_timeout: escalate\n  max_requests_per_run: 2"
    )
    gw = make_gateway(store_url, effects, spec_text)
    async with gw.run(tenant="t", agent="bot", task="flood") as run:
        results = [
            await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 200.0 + i})
            for i in range(3)
        ]
    gw.close()
    assert [type(r) for r in results] == [Pending, Pending, Denied]
    assert isinstance(results[2], Denied) and results[2].kind is FailureKind.APPROVAL_LIMIT
    assert "max_requests_per_run" in results[2].reasons[0]


async def test_approval_requests_are_bounded_per_end_user(store_url: str, effects: Effects) -> None:
    spec_text = __import__("conftest").SPEC.replace(
        "on_timeout: escalate", "on_timeout: escalate\n  max_requests_per_end_user_per_day: 2"
    )
    gw = make_gateway(store_url, effects, spec_text)
    results = []
    for i in range(3):  # one approval per run, three runs for the same end user
        run = gw.open_run(tenant="t", agent="bot", task=f"user run {i}", end_user="mallory")
        results.append(
            await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 300.0 + i})
        )
        run.finish()
    other = gw.open_run(tenant="t", agent="bot", task="someone else", end_user="alice")
    alice = await other.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 150.0})
    gw.close()
    assert [type(r) for r in results] == [Pending, Pending, Denied]
    assert isinstance(alice, Pending)


async def test_approver_who_opened_the_run_cannot_decide(gateway: Gateway) -> None:
    run = gateway.open_run(tenant="t", agent="bot", task="sod", opened_by="key:alice")
    pending = await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 999.0})
    assert isinstance(pending, Pending)
    with pytest.raises(UsageError, match="cannot approve"):
        await gateway.approve(pending.approval_id, approver="key:alice", roles=["lead"], rationale="mine")
    await gateway.approve(pending.approval_id, approver="key:bob", roles=["lead"], rationale="four eyes")


async def test_an_approver_sees_where_each_argument_came_from(gateway: Gateway) -> None:
    """Issue 8 §3: the approval's evidence names, per argument, the call and the output
    field its value came from, so a human can tell an attacker's address from the
    customer's."""
    async with gateway.run(tenant="t", agent="bot", task="evidence") as run:
        read = await run.call("get_doc", {"doc_id": "d1"})
        sent = await run.call("message", {"to": "mallory@evil.example", "body": "invoice"})
        assert isinstance(sent, Pending), sent
        record = gateway.svc.approvals.get(sent.approval_id)
    origins = record.evidence["provenance"]["origins"]["to"]
    assert origins[0] == {"tool": "get_doc", "action_id": read.action_id, "field": "text"}
