"""PII through the governed call, on both backends: rules decide on raw values, the store
and the sinks get tokens, approvals keep what they execute sealed, shredding holds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from warden import Allowed, Denied, Failed, FailureKind, Gateway, Pending, tool
from warden.approvals._queue import SHREDDED
from warden.errors import SpecError
from warden.ledger import iter_events, verify
from warden.spec import load_spec_text
from warden.store._tables import approvals, idempotency, ledger_events, outbox, runs, window_entries

SPEC = """
name: crm
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  bot: {scopes: [crm, mail]}
tools:
  lookup: {effect: read, scope: crm}
  send: {effect: external_message, scope: mail}
windows:
  sends_per_recipient:
    tool: send
    group_by: args.to
    period: 24h
  recipients_per_day:
    tool: send
    aggregate: count_distinct
    field: args.to
    period: 24h
pii:
  redact: [result.name]
  vault: true
policies:
  - name: two_per_recipient
    when: tool.name == "send" && window.sends_per_recipient >= 2
    effect: deny
    reason: at most two messages per recipient a day
  - name: vip_needs_approval
    when: tool.name == "send" && args.to.endsWith("@vip.example")
    effect: require_approval
    reason: VIPs are written to by a human's say-so
    approvers: lead
  - name: send_alone
    when: tool.name == "send"
    effect: allow
    reason: fine
escalation: {approver_roles: [lead]}
"""

EMAIL = "sam.ek@shop.example"
VIP = "ceo@vip.example"
CARD = "4111 1111 1111 1111"


class Sent:
    def __init__(self) -> None:
        self.to: list[str] = []


def _tools(sent: Sent) -> list[Any]:
    @tool(effect="read")
    def lookup(customer_id: str) -> dict[str, str]:
        return {"id": customer_id, "name": "Sam Ek", "email": EMAIL, "card": CARD}

    @tool(effect="external_message")
    def send(to: str, body: str) -> dict[str, str]:
        sent.to.append(to)
        return {"sent_to": to}

    return [lookup, send]


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def gateway(store_url: str, sent: Sent) -> Gateway:
    gw = Gateway(load_spec_text(SPEC), _tools(sent), store=store_url)
    yield gw  # type: ignore[misc]
    gw.close()


def _stored_text(gw: Gateway) -> str:
    """Everything the governed calls wrote to the tables that hold action data."""
    gw.flush()
    parts: list[str] = []
    with gw.store.read() as conn:
        for table in (ledger_events, approvals, idempotency, runs, window_entries, outbox):
            for row in conn.execute(select(table)):
                parts.append(json.dumps([str(v) for v in row]))
    return "\n".join(parts)


async def test_store_holds_tokens_while_tools_and_rules_see_raw_values(
    gateway: Gateway, sent: Sent
) -> None:
    async with gateway.run(tenant="acme", agent="bot", task=f"write to {EMAIL}") as run:
        found = await run.call("lookup", {"customer_id": "c1"})
        assert isinstance(found, Allowed) and found.result["email"] == EMAIL  # the agent's own
        results = [await run.call("send", {"to": EMAIL, "body": f"hi {i}"}) for i in range(3)]
    # the window keyed on the address counted across calls: the third is denied
    assert [type(r) for r in results] == [Allowed, Allowed, Denied]
    assert sent.to == [EMAIL, EMAIL]
    with gateway.store.read() as conn:
        items = {r.item for r in conn.execute(select(window_entries)) if r.item is not None}
    assert len(items) == 1 and next(iter(items)).startswith("pii:item:")  # keyed, not a bare hash

    stored = _stored_text(gateway)
    for raw in (EMAIL, CARD, CARD.replace(" ", ""), "Sam Ek"):
        assert raw not in stored
    events = list(iter_events(gateway.store, tenant="acme"))
    sends = [e for e in events if e.type == "action_requested" and e.payload["tool"] == "send"]
    tokens = {e.payload["args"]["to"] for e in sends}
    assert len(tokens) == 1 and next(iter(tokens)).startswith("pii:email:")
    looked_up = next(
        e.payload["result"] for e in events if e.type == "executed" and "card" in str(e.payload)
    )
    assert looked_up["card"].startswith("pii:card:") and looked_up["email"].startswith("pii:email:")
    assert looked_up["name"].startswith("pii:field:")  # declared in pii.redact
    assert verify(gateway.store, tenant="acme").ok

    # pii.vault: the raw values were kept (with the ledger's batch), for an auditor to read
    vault = gateway.svc.vault
    assert vault is not None
    token = next(iter(tokens))
    assert vault.reveal("acme", token, reader="ann", role="auditor", purpose="case 7") == EMAIL
    assert [(r.ref, r.reader) for r in vault.reads("acme")] == [(token, "ann")]


async def test_approval_keeps_the_raw_args_sealed_and_executes_them(
    gateway: Gateway, sent: Sent
) -> None:
    run = gateway.open_run(tenant="acme", agent="bot", task="vip mail")
    pending = await run.call("send", {"to": VIP, "body": "quarterly numbers"})
    assert isinstance(pending, Pending)
    assert VIP not in _stored_text(gateway)  # the row, the event, the webhook
    record = gateway.approvals.get(pending.approval_id)
    assert record.args == {"to": VIP, "body": "quarterly numbers"}  # opened for the approver

    await gateway.approve(pending.approval_id, approver="lead@shop.example", roles=["lead"], rationale="ok")
    done = await gateway.execute_approved(pending.approval_id)
    assert isinstance(done, Allowed) and sent.to == [VIP]
    assert VIP not in _stored_text(gateway) and "lead@shop.example" not in _stored_text(gateway)
    assert verify(gateway.store, tenant="acme").ok


async def test_shredding_a_tenant_leaves_its_approvals_unreadable_and_the_chain_intact(
    gateway: Gateway, sent: Sent
) -> None:
    run = gateway.open_run(tenant="acme", agent="bot", task="vip mail")
    pending = await run.call("send", {"to": VIP, "body": "numbers"})
    assert isinstance(pending, Pending)
    vault = gateway.svc.vault
    assert vault is not None
    vault.shred("acme", by="dpo")

    assert gateway.approvals.get(pending.approval_id).args == SHREDDED
    await gateway.approve(pending.approval_id, approver="lead@shop.example", roles=["lead"], rationale="ok")
    result = await gateway.execute_approved(pending.approval_id)
    # fails closed: the arguments are gone, nothing runs
    assert isinstance(result, Failed) and result.kind is FailureKind.SCHEMA_ERROR
    assert sent.to == []
    gateway.flush()
    assert verify(gateway.store, tenant="acme").ok


async def test_pii_off_stores_values_as_they_are(store_url: str, sent: Sent) -> None:
    spec = SPEC.replace("pii:\n  redact: [result.name]\n  vault: true\n", "pii: {enabled: false}\n")
    gw = Gateway(load_spec_text(spec), _tools(sent), store=store_url)
    try:
        async with gw.run(tenant="acme", agent="bot", task="t") as run:
            assert isinstance(await run.call("send", {"to": EMAIL, "body": "x"}), Allowed)
        assert EMAIL in _stored_text(gw)
    finally:
        gw.close()


@pytest.mark.parametrize(
    ("pii", "message"),
    [
        ("pii: {redact: [to]}", "pii.redact"),
        ("pii: {detect: [email, passport]}", "pii.detect"),
    ],
)
def test_a_bad_pii_section_names_its_field(pii: str, message: str) -> None:
    spec = SPEC.replace("pii:\n  redact: [result.name]\n  vault: true\n", pii + "\n")
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        load_spec_text(spec)


async def test_a_shredded_approval_runs_nothing_even_where_the_schema_accepts_anything(
    store_url: str,
) -> None:
    called: list[dict[str, Any]] = []

    def relay(**kwargs: Any) -> dict[str, int]:
        called.append(kwargs)
        return {"n": len(called)}

    spec = SPEC.replace(
        "  send: {effect: external_message, scope: mail}\n",
        "  send: {effect: external_message, scope: mail}\n"
        "  relay: {effect: external_message, scope: mail, input_schema: {type: object}}\n",
    ).replace(
        "  - name: send_alone\n",
        "  - name: relay_needs_a_human\n    when: tool.name == \"relay\"\n"
        "    effect: require_approval\n    reason: relayed\n    approvers: lead\n"
        "  - name: send_alone\n",
    )
    gw = Gateway(load_spec_text(spec), [*_tools(Sent()), tool(relay, effect="external_message")], store=store_url)
    try:
        run = gw.open_run(tenant="acme", agent="bot", task="relay")
        pending = await run.call("relay", {"to": VIP})
        assert isinstance(pending, Pending)
        assert gw.svc.vault is not None
        gw.svc.vault.shred("acme", by="dpo")
        await gw.approve(pending.approval_id, approver="lead", roles=["lead"], rationale="ok")
        result = await gw.execute_approved(pending.approval_id)
        assert isinstance(result, Failed)
        assert "shredded" in result.detail
        assert called == []
        assert gw.approvals.get(pending.approval_id).state == "failed"
    finally:
        gw.close()
