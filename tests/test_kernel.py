"""The governed call's seams (issue 7 §1): each test reproduces a hole of the old kernel."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from conftest import SPEC, Effects, make_gateway, shop_tools

from warden import Allowed, Denied, Failed, FailureKind, Gateway, Pending, ToolError, tool
from warden.errors import ForbiddenError, UsageError
from warden.ledger import iter_events
from warden.secrets import Secret
from warden.spec import load_spec_text

PAY = {"order_id": "o1", "customer_id": "c1", "amount": 500.0}
LEAD = {"approver": "lead@x", "roles": ["lead"]}


async def _approved_payment(gateway: Gateway) -> Pending:
    run = gateway.open_run(tenant="t", agent="bot", task="big pay")
    pending = await run.call("pay", PAY)
    assert isinstance(pending, Pending)
    await gateway.approve(pending.approval_id, rationale="fine", **LEAD)
    return pending


# -- a. kill switches stop approved actions --------------------------------------------


@pytest.mark.parametrize(
    ("scope", "target"),
    [("global", None), ("tenant", "t"), ("workflow", "shop"), ("tool", "pay")],
)
async def test_a_switch_stops_an_approved_payment(
    gateway: Gateway, effects: Effects, scope: str, target: str | None
) -> None:
    pending = await _approved_payment(gateway)
    gateway.switches.set(scope, target, active=True, by="ops", reason="incident")
    result = await gateway.execute_approved(pending.approval_id)
    assert isinstance(result, Denied) and result.kind is FailureKind.KILLED
    assert effects.paid == []
    # The approval is still approved: once the switch is off, it can run.
    assert gateway.approvals.get(pending.approval_id).state == "approved"
    gateway.switches.set(scope, target, active=False, by="ops", reason="resolved")
    assert isinstance(await gateway.execute_approved(pending.approval_id), Allowed)
    assert len(effects.paid) == 1


async def test_a_switch_set_during_an_inline_wait_stops_the_payment(
    gateway: Gateway, effects: Effects
) -> None:
    async def approver() -> None:
        while not gateway.approvals.list(state="pending"):
            await asyncio.sleep(0.01)
        record = gateway.approvals.list(state="pending")[0]
        gateway.switches.set("tool", "pay", active=True, by="ops", reason="incident")
        await gateway.approve(record.approval_id, rationale="ok", **LEAD)

    run = gateway.open_run(tenant="t", agent="bot", task="wait")
    task = asyncio.create_task(approver())
    result = await run.call("pay", PAY, wait=5)
    await task
    assert isinstance(result, Denied) and result.kind is FailureKind.KILLED
    assert effects.paid == []


# -- b. facts are governed like tools --------------------------------------------------


async def test_b_a_fact_whose_tool_is_switched_off_is_not_looked_up(
    store_url: str, effects: Effects
) -> None:
    looked_up: list[str] = []
    gw = make_gateway(store_url, effects)
    original = gw.svc.registry.get("get_order")
    assert original is not None and original.fn is not None
    inner = original.fn

    def spy(order_id: str) -> Any:
        looked_up.append(order_id)
        return inner(order_id=order_id)

    object.__setattr__(original, "fn", spy)
    try:
        gw.switches.set("tool", "get_order", active=True, by="ops", reason="leaking")
        run = gw.open_run(tenant="t", agent="bot", task="pay")
        result = await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 5.0})
        assert isinstance(result, Denied) and result.kind is FailureKind.FACT_ERROR
        assert "kill switch" in result.reasons[0]
        assert looked_up == [] and effects.paid == []
    finally:
        gw.close()


FACT_TIMEOUT_SPEC = SPEC.replace(
    "  get_order: {effect: read, scope: read}",
    "  get_order: {effect: read, scope: read, timeout: 200ms}",
)


async def test_b_a_fact_lookup_has_the_tools_timeout(store_url: str) -> None:
    @tool
    async def get_order(order_id: str) -> dict[str, str]:
        await asyncio.sleep(30)
        return {"customer_id": "c1"}

    @tool(effect="money")
    def pay(order_id: str, customer_id: str, amount: float) -> dict[str, Any]:
        return {"paid": amount}

    others = [t for t in _tools(Effects()) if t.__name__ not in ("get_order", "pay")]
    gw = Gateway(
        load_spec_text(FACT_TIMEOUT_SPEC, "shop.yaml"), [get_order, pay, *others], store=store_url
    )
    try:
        run = gw.open_run(tenant="t", agent="bot", task="pay")
        result = await asyncio.wait_for(
            run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 5.0}), 10
        )
        assert isinstance(result, Denied) and result.kind is FailureKind.FACT_ERROR
        assert "0.2s" in result.reasons[0]
    finally:
        gw.close()


def _tools(effects: Effects) -> list[Any]:
    return shop_tools(effects)


# -- d. a key is freed only when the tool says nothing happened -----------------------


async def test_d_an_error_after_the_charge_does_not_free_the_key(store_url: str) -> None:
    charges: list[float] = []

    @tool(effect="money")
    def pay(order_id: str, customer_id: str, amount: float) -> dict[str, Any]:
        charges.append(amount)
        raise ConnectionResetError("connection reset by peer")

    others = [t for t in _tools(Effects()) if t.__name__ != "pay"]
    gw = Gateway(load_spec_text(SPEC, "shop.yaml"), [pay, *others], store=store_url)
    try:
        args = {"order_id": "o1", "customer_id": "c1", "amount": 20.0}
        run = gw.open_run(tenant="t", agent="bot", task="pay")
        first = await run.call("pay", args, idempotency_key="charge-1")
        second = await run.call("pay", args, idempotency_key="charge-1")
        assert isinstance(first, Failed) and first.kind is FailureKind.TOOL_ERROR
        assert isinstance(second, Failed) and second.kind is FailureKind.OUTCOME_UNKNOWN
        assert charges == [20.0]
    finally:
        gw.close()


async def test_d_a_tool_that_declares_nothing_happened_frees_the_key(store_url: str) -> None:
    charges: list[float] = []
    refuse = [True]

    @tool(effect="money")
    def pay(order_id: str, customer_id: str, amount: float) -> dict[str, Any]:
        if refuse[0]:
            raise ToolError("card declined before charging", effect=False)
        charges.append(amount)
        return {"paid": amount}

    others = [t for t in _tools(Effects()) if t.__name__ != "pay"]
    gw = Gateway(load_spec_text(SPEC, "shop.yaml"), [pay, *others], store=store_url)
    try:
        args = {"order_id": "o1", "customer_id": "c1", "amount": 20.0}
        run = gw.open_run(tenant="t", agent="bot", task="pay")
        first = await run.call("pay", args, idempotency_key="charge-2")
        refuse[0] = False
        second = await run.call("pay", args, idempotency_key="charge-2")
        assert isinstance(first, Failed) and first.kind is FailureKind.TOOL_ERROR
        assert isinstance(second, Allowed) and charges == [20.0]
    finally:
        gw.close()


# -- e. a key is bound to its call -----------------------------------------------------


async def test_e_a_key_reused_for_another_call_is_a_conflict(
    gateway: Gateway, effects: Effects
) -> None:
    run = gateway.open_run(tenant="t", agent="bot", task="save")
    first = await run.call("save", {"key": "a", "value": 1}, idempotency_key="k1")
    assert isinstance(first, Allowed)
    other = gateway.open_run(tenant="t", agent="bot", task="other")
    remove = await other.call("remove", {"key": "customer-9"}, idempotency_key="k1")
    pay = await other.call(
        "pay", {"order_id": "o1", "customer_id": "c1", "amount": 99.0}, idempotency_key="k1"
    )
    for result in (remove, pay):
        assert isinstance(result, Failed) and result.kind is FailureKind.IDEMPOTENCY_CONFLICT
    # The same call with the same key, from another run of the tenant, replays.
    again = await other.call("save", {"key": "a", "value": 1}, idempotency_key="k1")
    assert isinstance(again, Allowed) and again.replayed and again.result == first.result
    assert effects.paid == [] and len(effects.saved) == 1
    gateway.flush()
    outcomes = [
        e.payload.get("kind") for e in iter_events(gateway.store, tenant="t") if e.type == "failed"
    ]
    assert outcomes.count("idempotency_conflict") == 2


async def test_e_a_replay_needs_switches_and_scopes_to_pass(
    gateway: Gateway, effects: Effects
) -> None:
    run = gateway.open_run(tenant="t", agent="bot", task="save")
    assert isinstance(
        await run.call("save", {"key": "a", "value": 1}, idempotency_key="k"), Allowed
    )
    weak = gateway.open_run(tenant="t", agent="weak", task="replay")
    result = await weak.call("save", {"key": "a", "value": 1}, idempotency_key="k")
    assert isinstance(result, Denied) and result.kind is FailureKind.SCOPE_DENIED
    gateway.switches.set("tool", "save", active=True, by="ops", reason="x")
    result = await run.call("save", {"key": "a", "value": 1}, idempotency_key="k")
    assert isinstance(result, Denied) and result.kind is FailureKind.KILLED


# -- g. approver roles and separation of duties (in process) --------------------------


async def test_g_deciding_needs_the_approvals_current_role(gateway: Gateway) -> None:
    run = gateway.open_run(tenant="t", agent="bot", task="big pay")
    pending = await run.call("pay", PAY)
    assert isinstance(pending, Pending) and pending.role == "lead"
    with pytest.raises(ForbiddenError, match="lead"):
        await gateway.approve(pending.approval_id, approver="cfo@x", roles=["cfo"], rationale="x")
    with pytest.raises(ForbiddenError):
        await gateway.approve(pending.approval_id, approver="anyone@x", rationale="no roles")
    assert gateway.approvals.get(pending.approval_id).state == "pending"
    await gateway.approve(pending.approval_id, rationale="ok", **LEAD)


async def test_g_the_proposer_cannot_decide_its_own_action(gateway: Gateway) -> None:
    run = gateway.open_run(tenant="t", agent="bot", task="big pay", opened_by="key:alice")
    pending = await run.call("pay", PAY, actor="key:admin")
    assert isinstance(pending, Pending)
    with pytest.raises(UsageError, match="proposed"):
        await gateway.approve(
            pending.approval_id, approver="key:admin", roles=["lead"], rationale="mine"
        )
    gateway.flush()
    requested = [e for e in iter_events(gateway.store, tenant="t") if e.type == "action_requested"]
    assert requested[-1].payload["proposed_by"] == "key:admin"


async def test_g_a_bridge_records_the_human_it_decides_for(gateway: Gateway) -> None:
    pending = await _approved_payment_by_bridge(gateway)
    gateway.flush()
    decided = [e for e in iter_events(gateway.store, tenant="t") if e.type == "approval_decided"]
    # stored as its PII token (docs/pii.md): the same token for the same person
    assert gateway.svc.pii is not None
    carol = gateway.svc.pii.redact_text("t", "carol@shop.example")
    assert decided[-1].payload["on_behalf_of"] == carol != "carol@shop.example"
    assert gateway.approvals.get(pending.approval_id).decided_by == "key:slack-bridge"


async def _approved_payment_by_bridge(gateway: Gateway) -> Pending:
    run = gateway.open_run(tenant="t", agent="bot", task="big pay")
    pending = await run.call("pay", PAY)
    assert isinstance(pending, Pending)
    await gateway.approve(
        pending.approval_id,
        approver="key:slack-bridge",
        on_behalf_of="carol@shop.example",
        roles=["lead"],
        rationale="ok in chat",
    )
    return pending


# -- l. loose ends ---------------------------------------------------------------------


async def test_l_finishing_a_run_cancels_its_open_approvals(
    gateway: Gateway, effects: Effects
) -> None:
    run = gateway.open_run(tenant="t", agent="bot", task="big pay")
    pending = await run.call("pay", PAY)
    approved = await run.call("pay", {**PAY, "amount": 600.0})
    assert isinstance(pending, Pending) and isinstance(approved, Pending)
    await gateway.approve(approved.approval_id, rationale="ok", **LEAD)
    run.finish("completed")
    for approval_id in (pending.approval_id, approved.approval_id):
        assert gateway.approvals.get(approval_id).state == "cancelled"
        result = await gateway.execute_approved(approval_id)
        assert isinstance(result, Denied)
    assert effects.paid == []
    gateway.flush()
    cancelled = [
        e for e in iter_events(gateway.store, tenant="t") if e.type == "approval_cancelled"
    ]
    assert len(cancelled) == 2


CRED_SPEC = SPEC.replace(
    "  nap: {effect: read, scope: read}",
    "  nap: {effect: read, scope: read}\n  blob: {effect: read, scope: read, credential: env:BLOB_TOKEN}",
)


async def test_l_a_bytes_result_does_not_leak_the_secret_in_base64(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLOB_TOKEN", "s3cr3t-token-value")

    @tool
    def blob(name: str, token: Secret) -> Any:  # untyped output: recorded as base64
        return {"body": f"header {token.value} trailer".encode()}

    gw = Gateway(
        load_spec_text(CRED_SPEC, "shop.yaml"), [*_tools(Effects()), blob], store=store_url
    )
    try:
        run = gw.open_run(tenant="t", agent="bot", task="blob")
        result = await run.call("blob", {"name": "x"})
        assert isinstance(result, Allowed)
        text = str(result.result)
        decoded = (
            base64.b64decode(result.result).decode() if isinstance(result.result, str) else text
        )
        assert "s3cr3t-token-value" not in text and "s3cr3t-token-value" not in decoded
    finally:
        gw.close()


CAP_SPEC = SPEC.replace(
    "  on_timeout: escalate\n", "  on_timeout: escalate\n  max_requests_per_end_user_per_day: 2\n"
)


async def test_l_a_per_end_user_cap_requires_the_end_user(store_url: str, effects: Effects) -> None:
    gw = make_gateway(store_url, effects, CAP_SPEC)
    try:
        with pytest.raises(UsageError, match="end_user"):
            gw.open_run(tenant="t", agent="bot", task="no user")
        run = gw.open_run(tenant="t", agent="bot", task="user", end_user="u1")
        assert isinstance(await run.call("pay", PAY), Pending)
    finally:
        gw.close()


# -- m. state follows the call ----------------------------------------------------------


async def test_m_an_approved_actions_output_reaches_the_requesting_run(gateway: Gateway) -> None:
    spec_gw = gateway
    run = spec_gw.open_run(tenant="t", agent="bot", task="doc")
    pending = await run.call("pay", PAY)
    assert isinstance(pending, Pending)
    await spec_gw.approve(pending.approval_id, rationale="ok", **LEAD)
    assert isinstance(await spec_gw.execute_approved(pending.approval_id), Allowed)
    # The run's next action id follows the approved one, from the original object and a
    # resumed one alike.
    resumed = spec_gw.resume_run(run.run_id)
    a = await run.call("get_doc", {"doc_id": "d1"})
    b = await resumed.call("get_doc", {"doc_id": "d2"})
    assert a.action_id != pending.action_id and b.action_id not in (a.action_id, pending.action_id)


async def test_m_bad_arguments_do_not_open_the_breaker_for_others(store_url: str) -> None:
    @tool
    def get_order(order_id: str) -> dict[str, str]:
        if order_id.startswith("missing"):
            raise ToolError(f"no order {order_id}")
        return {"id": order_id, "customer_id": "c1"}

    others = [t for t in _tools(Effects()) if t.__name__ != "get_order"]
    gw = Gateway(load_spec_text(SPEC, "shop.yaml"), [get_order, *others], store=store_url)
    try:
        a = gw.open_run(tenant="a", agent="bot", task="bad")
        for i in range(6):
            bad = await a.call("get_order", {"order_id": f"missing-{i}"})
            assert isinstance(bad, Failed) and bad.kind is FailureKind.TOOL_ERROR
        b = gw.open_run(tenant="b", agent="bot", task="good")
        assert isinstance(await b.call("get_order", {"order_id": "o1"}), Allowed)
        assert isinstance(await a.call("get_order", {"order_id": "o2"}), Allowed)
    finally:
        gw.close()


async def test_m_one_tenants_outage_does_not_open_anothers_breaker(store_url: str) -> None:
    @tool
    def get_order(order_id: str) -> dict[str, str]:
        if order_id.startswith("down"):
            raise ToolError("upstream 503", fault="tool")
        return {"id": order_id, "customer_id": "c1"}

    others = [t for t in _tools(Effects()) if t.__name__ != "get_order"]
    gw = Gateway(load_spec_text(SPEC, "shop.yaml"), [get_order, *others], store=store_url)
    try:
        a = gw.open_run(tenant="a", agent="bot", task="down")
        for i in range(6):
            await a.call("get_order", {"order_id": f"down-{i}"})
        tripped = await a.call("get_order", {"order_id": "o1"})
        assert isinstance(tripped, Failed) and tripped.kind is FailureKind.CIRCUIT_OPEN
        b = gw.open_run(tenant="b", agent="bot", task="good")
        assert isinstance(await b.call("get_order", {"order_id": "o1"}), Allowed)
    finally:
        gw.close()


# -- h (kernel side). a tool's output the ledger cannot record -------------------------


async def test_h_an_unrecordable_output_fails_the_call_and_the_ledger_stays_whole(
    store_url: str,
) -> None:
    @tool
    def get_doc(doc_id: str) -> dict[str, str]:
        return {"id": doc_id, "text": "broken \ud800 text"}

    @tool(effect="write")
    def save(key: str, value: int) -> dict[str, str]:
        return {"saved": "\ud800"}

    others = [t for t in _tools(Effects()) if t.__name__ not in ("get_doc", "save")]
    gw = Gateway(load_spec_text(SPEC, "shop.yaml"), [get_doc, save, *others], store=store_url)
    try:
        run = gw.open_run(tenant="t", agent="bot", task="bad output")
        for tool_name, args in (("get_doc", {"doc_id": "d1"}), ("save", {"key": "k", "value": 1})):
            result = await run.call(tool_name, args)
            assert isinstance(result, Failed) and result.kind is FailureKind.OUTPUT_SCHEMA_ERROR
        assert isinstance(await run.call("get_order", {"order_id": "o1"}), Allowed)
        assert gw.verify_ledger().ok
    finally:
        gw.close()
