"""A suggested decision per pending approval (warden.approvals._suggest): what it says for
the facts, provenance and history an approver relies on, that the history is read in one
statement however many approvals a page holds, and that the API hands it out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import SPEC, Effects, make_gateway
from sqlalchemy import event, insert, select
from test_console import World, opened_world

from warden import Gateway, Pending
from warden.approvals import History, read_history, suggest, suggest_many
from warden.approvals._suggest import Earlier, history_key
from warden.store import Store
from warden.store._tables import approvals

# SPEC without the 3-a-day window limit, so one customer can be paid often
OFTEN = SPEC.replace("window.pays_per_customer >= 3", "window.pays_per_customer >= 1000")
BIG_PAY = {"order_id": "o1", "customer_id": "c1", "amount": 250.0}


@dataclass
class Item:
    """What a suggestion reads of an approval."""

    args: dict[str, Any]
    evidence: dict[str, Any] = field(default_factory=dict)
    tenant: str = "acme"
    workflow: str = "refund_triage"
    rules: list[str] = field(default_factory=lambda: ["refund_over_100_needs_approval"])
    reasons: list[str] = field(default_factory=lambda: ["Refunds over $100 need a support lead."])


def _refund(amount: float, *, untrusted: bool = False, method: str = "pm_1") -> Item:
    provenance = (
        {
            "untrusted_args": ["amount"],
            "origins": {"amount": [{"tool": "get_ticket", "field": "body", "action_id": "r.1"}]},
        }
        if untrusted
        else {}
    )
    return Item(
        args={"order_id": "o1", "amount": amount, "payment_method_id": method},
        evidence={
            "facts": {"order": {"amount": 120.0, "payment_method_id": "pm_1", "refunded": 0}},
            "window": {},
            "provenance": provenance,
        },
    )


def _history(approved: int = 0, edited: int = 0, rejected: int = 0) -> History:
    return History(approved, edited, rejected)


# -- what it suggests --------------------------------------------------------------------------


def test_an_untrusted_amount_above_the_fact_is_suggested_edited_down() -> None:
    found = suggest(_refund(250.0, untrusted=True), _history(approved=9))
    assert found.action == "edit"
    assert found.args == {"amount": 120.0}
    cited = {(c.source, c.ref) for c in found.reasons}
    assert ("fact", "facts.order.amount") in cited
    assert ("provenance", "args.amount") in cited


def test_an_argument_unlike_the_fact_is_suggested_rejected() -> None:
    found = suggest(_refund(110.0, method="pm_evil"), _history(approved=9))
    assert found.action == "reject"
    assert any(
        c.ref == "facts.order.payment_method_id" and "differs" in c.text for c in found.reasons
    )


def test_a_history_of_approvals_suggests_approve_and_cites_it() -> None:
    earlier = tuple(
        Earlier(f"apr_{i}", "approved", datetime(2026, 12, 1, tzinfo=UTC)) for i in range(3)
    )
    history = History(approved=5, recent=earlier)
    found = suggest(_refund(110.0), history)
    assert found.action == "approve"
    assert [c.ref for c in found.reasons if c.ref.startswith("apr_")] == ["apr_0", "apr_1", "apr_2"]


def test_a_history_of_rejections_suggests_reject() -> None:
    assert suggest(_refund(110.0), _history(approved=1, rejected=4)).action == "reject"


def test_a_history_of_edits_suggests_edit() -> None:
    assert suggest(_refund(110.0), _history(edited=4)).action == "edit"


def test_no_history_says_so() -> None:
    found = suggest(_refund(110.0), _history())
    texts = [c.text for c in found.reasons if c.source == "history"]
    assert texts == [
        "no earlier decision of refund_triage / refund_over_100_needs_approval in this tenant "
        "in the last 30 days"
    ]


def _message(to: str, body: str, untrusted: list[str]) -> Item:
    return Item(
        args={"to": to, "body": body},
        evidence={"facts": {}, "provenance": {"untrusted_args": untrusted}},
        rules=["message_to_address_from_ticket_text"],
        reasons=["The recipient comes from ticket text, not from the customer record."],
    )


def test_an_untrusted_recipient_no_fact_vouches_for_is_suggested_rejected() -> None:
    # two approvals are not a pattern: nothing vouches for the address → reject
    found = suggest(_message("x@evil.example", "Refund done.", ["to"]), _history(approved=2))
    assert found.action == "reject"


def test_untrusted_prose_alone_does_not_make_it_reject() -> None:
    found = suggest(_message("a@shop.example", "Refund of $20 done.", ["body"]), _history())
    assert found.action == "approve"


def test_an_untrusted_amount_within_the_fact_is_vouched_for() -> None:
    found = suggest(_refund(110.0, untrusted=True), _history())
    assert found.action == "approve"
    assert any(c.text == "args.amount 110.0 is within facts.order.amount 120.0" for c in found.reasons)


def test_a_clean_action_without_history_is_suggested_approved() -> None:
    assert suggest(_refund(110.0), _history()).action == "approve"


def test_the_rules_and_their_reasons_are_cited() -> None:
    found = suggest(_refund(110.0), _history())
    rules = [(c.ref, c.text) for c in found.reasons if c.source == "rule"]
    assert rules == [("refund_over_100_needs_approval", "Refunds over $100 need a support lead.")]


def test_the_same_approval_and_history_give_the_same_suggestion() -> None:
    first = suggest(_refund(250.0, untrusted=True), _history(approved=1))
    assert suggest(_refund(250.0, untrusted=True), _history(approved=1)) == first


# -- the history, from the store (both backends) ------------------------------------------------


@pytest.fixture
def often(store_url: str, effects: Effects) -> Iterator[Gateway]:
    gw = make_gateway(store_url, effects, OFTEN)
    yield gw
    gw.close()


async def _pending(gateway: Gateway, tenant: str = "acme", amount: float = 250.0) -> str:
    run = gateway.open_run(tenant=tenant, agent="bot", task="pay")
    result = await run.call("pay", {**BIG_PAY, "amount": amount})
    assert isinstance(result, Pending)
    return result.approval_id


async def _decided(gateway: Gateway, how: str, tenant: str = "acme") -> str:
    approval_id = await _pending(gateway, tenant)
    if how == "rejected":
        await gateway.reject(approval_id, approver="ana", roles=["lead"], rationale="no")
    elif how == "edited":
        await gateway.approve(
            approval_id, approver="ana", roles=["lead"], rationale="less", args={**BIG_PAY, "amount": 150.0}
        )
    else:
        await gateway.approve(approval_id, approver="ana", roles=["lead"], rationale="ok")
    return approval_id


def _suggested(gateway: Gateway, approval_id: str, now: datetime | None = None) -> Any:
    gateway.flush()
    record = gateway.approvals.get(approval_id)
    return suggest_many(gateway.store, [record], now or datetime.now(UTC))[0]


async def test_history_counts_approved_edited_and_rejected(often: Gateway) -> None:
    for how in ("approved", "approved", "edited", "rejected"):
        await _decided(often, how)
    found = _suggested(often, await _pending(often))
    counts = (found.history.approved, found.history.edited, found.history.rejected)
    assert counts == (2, 1, 1)


async def test_earlier_approvals_suggest_approve_linking_the_three_latest(often: Gateway) -> None:
    ids = [await _decided(often, "approved") for _ in range(4)]
    found = _suggested(often, await _pending(often))
    assert found.action == "approve"
    assert {e.approval_id for e in found.history.recent} <= set(ids)
    assert len(found.history.recent) == 3


async def test_history_stays_in_its_tenant(often: Gateway) -> None:
    for _ in range(3):
        await _decided(often, "approved", tenant="globex")
    found = _suggested(often, await _pending(often, tenant="acme"))
    assert found.history.total == 0


async def test_history_older_than_30_days_is_left_out(often: Gateway) -> None:
    for _ in range(3):
        await _decided(often, "approved")
    later = datetime.now(UTC) + timedelta(days=31)
    found = _suggested(often, await _pending(often), now=later)
    assert found.history.total == 0


async def test_pending_and_expired_approvals_are_not_history(often: Gateway) -> None:
    await _pending(often)
    found = _suggested(often, await _pending(often))
    assert found.history.total == 0


# -- one statement, whatever the page holds ---------------------------------------------------


class Statements:
    """The SQL statements run on ``store`` while the block runs."""

    def __init__(self, store: Store) -> None:
        self.seen: list[str] = []
        self.engine = store.engine

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self.seen.append(statement)


def _insert_copies(
    store: Store, approval_id: str, n: int, **vary: Callable[[int], str]
) -> list[str]:
    """``n - 1`` copies of a pending approval, the ids of the ``n``; ``vary``: column ->
    its value for copy ``i``."""
    with store.read() as conn:
        row = dict(
            conn.execute(select(approvals).where(approvals.c.approval_id == approval_id))
            .mappings()
            .one()
        )
    copies = [
        {
            **row,
            "approval_id": f"apr_copy{i:016d}",
            "action_id": f"{row['action_id']}-{i}",
            "idempotency_key": f"{row['idempotency_key']}-{i}",
            **{column: value(i) for column, value in vary.items()},
        }
        for i in range(1, n)
    ]
    if copies:
        with store.write() as conn:
            conn.execute(insert(approvals), copies)
    return [approval_id] + [c["approval_id"] for c in copies]


def _copies(gateway: Gateway, approval_id: str, n: int) -> list[Any]:
    """``n`` pending approvals: the one given and copies of it, each in its own tenant and
    rules (so each has a history key of its own)."""
    ids = _insert_copies(
        gateway.store,
        approval_id,
        n,
        tenant=lambda i: f"tenant-{i}",
        rules=lambda i: f'["rule_{i}"]',
    )
    return [gateway.approvals.get(i) for i in ids]


@pytest.mark.parametrize("n", [1, 50])
async def test_the_history_of_a_page_is_one_statement(often: Gateway, n: int) -> None:
    await _decided(often, "approved")
    items = _copies(often, await _pending(often), n)
    with Statements(often.store) as seen:
        found = suggest_many(often.store, items, datetime.now(UTC))
    assert len(found) == n
    assert len([s for s in seen.seen if "approvals" in s]) == 1


async def test_read_history_keys_by_tenant_workflow_and_rules(often: Gateway) -> None:
    first = await _decided(often, "approved")
    record = often.approvals.get(first)
    with often.store.read() as conn:
        found = read_history(conn, [history_key(record)], datetime.now(UTC))
    assert found[history_key(record)].approved == 1


# -- on the API and the console ---------------------------------------------------------------


@pytest.fixture
async def world(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    monkeypatch.chdir(tmp_path)
    async with opened_world(store_url, tmp_path) as made:
        yield made


async def test_the_api_hands_out_a_labelled_suggestion(world: World) -> None:
    made = (await world.pending(1))[0]
    one = await world.approval(made["approval_id"])
    assert one["suggestion"]["label"] == "suggestion"
    assert one["suggestion"]["action"] in ("approve", "reject", "edit")
    listed = (await world.agent.get("/v1/approvals")).json()["items"]
    assert listed[0]["suggestion"] == one["suggestion"]


async def test_a_list_may_leave_the_suggestions_out(world: World) -> None:
    await world.pending(1)
    listed = (await world.agent.get("/v1/approvals?suggest=false")).json()["items"]
    assert listed[0]["suggestion"] is None


async def test_a_decided_approval_has_no_suggestion(world: World) -> None:
    made = (await world.pending(1))[0]
    lead = await world.user("lead")
    decided = await lead.post(
        f"/ui/approvals/{made['approval_id']}/decide", {"decision": "reject", "rationale": "no"}
    )
    assert decided.status_code == 303
    assert (await world.approval(made["approval_id"]))["suggestion"] is None


async def test_the_approval_page_shows_the_suggestion_and_its_sources(world: World) -> None:
    made = (await world.pending(1))[0]
    lead = await world.user("lead")
    page = (await lead.get(f"/ui/approvals/{made['approval_id']}")).text
    assert "a suggestion: you decide" in page
    assert "no earlier decision of refund_triage / refund_over_100_needs_approval" in page


async def _queue_statements(world: World, n: int) -> int:
    made = (await world.pending(1))[0]
    state = world.app.state.warden
    _insert_copies(state.store, made["approval_id"], n, rules=lambda i: f'["rule_{i % 7}"]')
    lead = await world.user("lead")
    with Statements(state.store) as statements:
        page = await lead.get("/ui/approvals")
    assert page.text.count('class="item"') == n
    return len([s for s in statements.seen if "approvals" in s])


@pytest.mark.parametrize("n", [1, 50])
async def test_the_queue_page_reads_the_list_and_the_history_once(world: World, n: int) -> None:
    # the listing, then the history of every item in one statement
    assert await _queue_statements(world, n) == 2
