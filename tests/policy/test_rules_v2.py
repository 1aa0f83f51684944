"""What rules can say (issue 8 §2), at the engine: the decision time and run context,
chained facts, named variables, score rules and risk review, autonomy thresholds, shadow
rules, windows v2 as compiled, and time literals checked at load."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from warden.errors import CelEvalError, SpecError
from warden.policy import Decision, LazyVariables, Policy
from warden.results import Pending, from_wire, to_wire
from warden.spec import EffectClass, Tier, load_spec_text

BASE = """\
name: shop
version: "1"
owner: tests@example.com
tier: {tier}
tools:
  get_order: {{effect: read, input_schema: {{type: object, properties: {{order_id: {{type: string}}}}}}}}
  get_customer: {{effect: read}}
  pay: {{effect: money, input_schema: {{properties: {{order_id: {{}}, customer_id: {{}}, amount: {{}}}}}}}}
  refund: {{effect: money}}
  wipe: {{effect: delete}}
  note: {{effect: write}}
"""

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def policy(extra: str, tier: str = "autonomous", **kw: Any) -> Policy:
    return Policy(load_spec_text(BASE.format(tier=tier) + extra, "shop.yaml"), **kw)


def issues(extra: str, tier: str = "autonomous", **kw: Any) -> list[str]:
    with pytest.raises(SpecError) as info:
        policy(extra, tier, **kw)
    return [str(i) for i in info.value.issues]


def activation(tool: str = "pay", **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tool": {"name": tool, "effect": "money"},
        "args": {"order_id": "o1", "customer_id": "c1", "amount": 50.0},
        "principal": {"agent": "bot", "scopes": [], "key": None},
        "tenant": "t",
        "run": {
            "id": "r",
            "step": 1,
            "tier": "autonomous",
            "task_type": "refund_request",
            "counts": {},
            "end_user": "u1",
            "opened_by": "key:ops",
            "risk": 0.0,
        },
        "provenance": {"untrusted_args": []},
        "window": {},
        "facts": {},
        "now": NOW,
    }
    base.update(over)
    return base


def decide(
    p: Policy,
    tool: str = "pay",
    effect: EffectClass = EffectClass.MONEY,
    tier: Tier = Tier.AUTONOMOUS,
    **over: Any,
) -> Decision:
    return p.decide(p.for_tool(tool), effect, tier, activation(tool, **over))


ALLOW_PAY = """\
  - {name: pay_alone, when: 'tool.name == "pay" && args.amount <= 100.0', effect: allow, reason: threshold}
"""

# -- context ---------------------------------------------------------------------------


def test_now_is_the_decision_time() -> None:
    p = policy(
        "policies:\n"
        + ALLOW_PAY
        + """\
  - name: freeze_after_march
    when: tool.name == "pay" && now >= timestamp("2026-03-01T00:00:00Z")
    effect: deny
    reason: payments frozen
"""
    )
    assert decide(p).rules == ("freeze_after_march",)
    assert decide(p, now=NOW - timedelta(days=30)).effect.value == "allow"


def test_the_clock_is_read_only_for_tools_whose_decision_reads_now() -> None:
    p = policy(
        """\
facts:
  order: {tool: get_order, args: {order_id: 'string(now) + "/" + args.order_id'}}
variables:
  recent: now - timestamp("2026-01-01T00:00:00Z") < duration("24h")
policies:
  - {name: direct, when: 'now < timestamp("2030-01-01T00:00:00Z")', effect: allow, reason: r, tools: [pay]}
  - {name: via_variable, when: 'variables.recent', effect: deny, reason: r, tools: [refund]}
  - {name: via_fact, when: 'facts.order.open', effect: deny, reason: r, tools: [wipe]}
  - {name: without, when: 'args.key == "x"', effect: deny, reason: r, tools: [note]}
"""
    )
    assert [p.for_tool(t).now for t in ("pay", "refund", "wipe", "note", "get_order")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_a_timestamp_without_a_zone_is_a_load_error_with_its_line() -> None:
    found = issues(
        """\
policies:
  - name: frozen
    when: now >= timestamp("2026-01-01T00:00:00")
    effect: deny
    reason: frozen
"""
    )
    assert len(found) == 1
    assert found[0].startswith("shop.yaml:14: policies[0].when: CEL:")
    assert "needs its time zone" in found[0]


def test_the_run_and_the_principal_in_rules() -> None:
    p = policy(
        "policies:\n"
        + ALLOW_PAY
        + """\
  - name: only_for_end_users
    when: tool.name == "pay" && run.end_user == null
    effect: deny
    reason: a payment needs an end user
  - name: keys_need_review
    when: tool.name == "pay" && principal.key != null && run.opened_by != principal.key
    effect: require_approval
    reason: another key proposed it
  - name: risky_run
    when: tool.name == "pay" && run.risk >= 0.5 && run.task_type == "refund_request"
    effect: escalate
    reason: the run was risky already
"""
    )
    assert decide(p).effect.value == "allow"
    run = activation()["run"]
    assert decide(p, run={**run, "end_user": None}).rules == ("only_for_end_users",)
    principal = {"agent": "bot", "scopes": [], "key": "k_123"}
    assert decide(p, principal=principal).rules == ("keys_need_review",)
    assert decide(p, run={**run, "risk": 0.5}).rules == ("risky_run",)


# -- chained facts ---------------------------------------------------------------------

FACTS = """\
facts:
  customer:
    tool: get_customer
    args: {customer_id: facts.order.customer_id}
  order:
    tool: get_order
    args: {order_id: args.order_id}
"""


def test_chained_facts_are_ordered_and_needed_together() -> None:
    p = policy(
        FACTS
        + "policies:\n"
        + """\
  - {name: vip, when: 'tool.name == "pay" && facts.customer.vip', effect: allow, reason: vip}
"""
    )
    assert p.fact_order == ("order", "customer")
    # the rule names only `customer`; `order` is needed to compute its arguments
    assert p.for_tool("pay").facts == {"customer", "order"}
    assert p.for_tool("note").facts == frozenset()


def test_a_cycle_of_facts_is_a_load_error_with_its_line() -> None:
    found = issues(
        """\
facts:
  order:
    tool: get_order
    args: {order_id: facts.customer.last_order}
  customer:
    tool: get_customer
    args: {customer_id: facts.order.customer_id}
"""
    )
    assert len(found) == 1
    assert "cycle: customer -> order -> customer" in found[0] or (
        "cycle: order -> customer -> order" in found[0]
    )
    assert found[0].startswith("shop.yaml:1") and "facts." in found[0]


def test_a_fact_using_an_undeclared_fact_is_a_load_error() -> None:
    found = issues(
        """\
facts:
  order:
    tool: get_order
    args: {order_id: facts.ticket.order_id}
"""
    )
    assert len(found) == 1
    assert "shop.yaml:15: facts.order.args.order_id" in found[0]
    assert "fact 'ticket', which is not declared" in found[0]


# -- variables ---------------------------------------------------------------------------


VARIABLES = """\
windows:
  paid_24h: {tool: pay, aggregate: sum, field: args.amount, group_by: args.customer_id, period: 24h}
variables:
  total: window.paid_24h + args.amount
  booked_recently: now - facts.order.booked_at < duration("24h")
  big_and_recent: variables.total > 100.0 && variables.booked_recently
"""


def test_variables_are_shared_and_pull_in_their_facts_and_windows() -> None:
    p = policy(
        FACTS
        + VARIABLES
        + "policies:\n"
        + ALLOW_PAY
        + """\
  - name: review_big_recent
    when: tool.name == "pay" && variables.big_and_recent
    effect: require_approval
    reason: big and recent
"""
    )
    tp = p.for_tool("pay")
    assert tp.variables and tp.facts == {"order"} and tp.windows == {"paid_24h"}
    recent = {"order": {"booked_at": NOW - timedelta(hours=2)}}
    old = {"order": {"booked_at": NOW - timedelta(days=3)}}
    assert decide(p, facts=recent, window={"paid_24h": 60.0}).rules == ("review_big_recent",)
    assert decide(p, facts=old, window={"paid_24h": 60.0}).effect.value == "allow"
    assert decide(p, facts=recent, window={"paid_24h": 10.0}).effect.value == "allow"
    # a rule that names no variable does not build them
    assert not p.for_tool("refund").variables


def test_a_variable_is_evaluated_once_per_decision_and_only_when_used() -> None:
    calls: list[str] = []

    def counted(name: str) -> Any:
        def fn(a: Any) -> Any:
            calls.append(name)
            return a["args"]["amount"] * 2

        return fn

    lazy = LazyVariables({"double": counted("double"), "unused": counted("unused")}, activation())
    assert lazy["double"] == 100.0 and lazy["double"] == 100.0
    assert calls == ["double"]

    def broken(a: Any) -> Any:
        calls.append("broken")
        raise CelEvalError("no such key: x")

    failing = LazyVariables({"broken": broken}, activation())
    for _ in range(2):
        with pytest.raises(CelEvalError, match="variable 'broken' could not be evaluated"):
            failing["broken"]
    assert calls == ["double", "broken"]


def test_a_variable_that_fails_denies_every_rule_that_uses_it() -> None:
    p = policy(
        """\
variables:
  limit: args.limits.pay
policies:
  - {name: over, when: 'tool.name == "pay" && args.amount > variables.limit', effect: deny, reason: over}
"""
        + ALLOW_PAY
    )
    decision = decide(p)
    assert decision.effect.value == "deny" and decision.rules == ("over",)
    assert "variable 'limit' could not be evaluated" in decision.reasons[0]


def test_variable_cycles_and_unknown_names_are_load_errors() -> None:
    found = issues(
        """\
variables:
  a: variables.b + 1
  b: variables.a + 1
  c: variables.nope
policies:
  - {name: r, when: 'variables.missing > 1', effect: deny, reason: r}
"""
    )
    text = "\n".join(found)
    assert "variables use each other in a cycle: a -> b -> a" in text
    assert "shop.yaml:15: variables.c" in text and "variable 'nope'" in text
    assert "policies[0].when" in text and "variable 'missing'" in text


def test_variables_are_read_by_name() -> None:
    found = issues(
        """\
variables:
  a: args.amount
policies:
  - {name: r, when: 'size(variables) > 0', effect: deny, reason: r}
"""
    )
    assert len(found) == 1 and "uses 'variables' other than as variables.<name>" in found[0]


# -- score rules and risk review -----------------------------------------------------------

SCORED = """\
risk: {review_at: 0.7}
policies:
"""
SCORE_RULES = """\
  - {name: new_customer, when: 'args.customer_id == "new"', effect: score, risk: 0.5, reason: new, tools: [pay]}
  - {name: large, when: 'tool.name == "pay" && args.amount > 80.0', effect: score, risk: 0.5, reason: large}
"""


def test_score_rules_add_risk_and_review_at_sends_to_a_human() -> None:
    p = policy(SCORED + ALLOW_PAY + SCORE_RULES)
    one = decide(p, args={"order_id": "o", "customer_id": "new", "amount": 50.0})
    assert one.effect.value == "allow" and one.risk == 0.5
    assert one.matched == ("pay_alone", "new_customer")
    both = decide(p, args={"order_id": "o", "customer_id": "new", "amount": 90.0})
    assert both.effect.value == "require_approval" and both.risk == 0.75
    assert both.rules == ("risk:review_at",)
    assert both.reasons == ("risk 0.75 is at or above risk.review_at (0.7)",)


def test_review_at_never_loosens_a_stricter_decision() -> None:
    p = policy(
        SCORED
        + ALLOW_PAY
        + SCORE_RULES
        + """\
  - {name: blocked, when: 'args.customer_id == "new"', effect: deny, reason: blocked}
"""
    )
    decision = decide(p, args={"order_id": "o", "customer_id": "new", "amount": 90.0})
    assert decision.effect.value == "deny" and decision.rules == ("blocked",)


def test_without_review_at_risk_only_records() -> None:
    p = policy("policies:\n" + ALLOW_PAY + SCORE_RULES)
    decision = decide(p, args={"order_id": "o", "customer_id": "new", "amount": 90.0})
    assert decision.effect.value == "allow" and decision.risk == 0.75


def test_a_score_rule_needs_risk() -> None:
    found = issues(
        "policies:\n  - {name: s, when: 'true', effect: score, reason: nothing}\n"
    )
    assert len(found) == 1 and "needs a 'risk' above 0" in found[0]


# -- autonomy thresholds ----------------------------------------------------------------


def test_autonomous_money_without_an_allow_rule_goes_to_approval() -> None:
    p = policy("policies:\n" + ALLOW_PAY)
    small = decide(p)
    assert small.effect.value == "allow" and small.rules == ("pay_alone",)
    big = decide(p, args={"order_id": "o", "customer_id": "c", "amount": 500.0})
    assert big.effect.value == "require_approval" and big.rules == ("default:autonomy",)
    refund = decide(p, "refund")
    assert refund.effect.value == "require_approval" and refund.rules == ("default:autonomy",)
    # a plain write still runs alone, a delete is still denied
    assert decide(p, "note", EffectClass.WRITE).effect.value == "allow"
    assert decide(p, "wipe", EffectClass.DELETE).rules == ("default:delete",)


def test_a_rule_asking_for_approval_is_named_without_the_default() -> None:
    p = policy(
        "policies:\n"
        + ALLOW_PAY
        + "  - {name: big, when: 'args.amount > 100.0', effect: require_approval, reason: big}\n"
    )
    big = decide(p, args={"order_id": "o", "customer_id": "c", "amount": 500.0})
    assert big.rules == ("big",) and big.reasons == ("big",)


def test_warnings_name_autonomous_tools_no_rule_allows() -> None:
    p = policy("policies:\n" + ALLOW_PAY)
    assert [w.path for w in p.warnings] == ["tools.refund", "tools.wipe"]
    refund, wipe = (str(w) for w in p.warnings)
    assert refund.startswith("shop.yaml:9: tools.refund:") and "sent to approval" in refund
    assert "denied" in wipe
    # other tiers: the tier decides, no thresholds needed
    assert policy("policies:\n" + ALLOW_PAY, tier="approve").warnings == ()
    # the registry's effect classes count where the spec leaves them out
    quiet = policy("policies:\n" + ALLOW_PAY, tool_effects={"refund": EffectClass.WRITE})
    assert [w.path for w in quiet.warnings] == ["tools.wipe"]


def test_a_shadow_allow_is_not_a_threshold() -> None:
    p = policy(
        "policies:\n"
        "  - {name: s, when: 'tool.name == \"refund\"', effect: allow, reason: s, mode: shadow}\n"
    )
    assert "tools.refund" in [w.path for w in p.warnings]
    assert decide(p, "refund").effect.value == "require_approval"


# -- shadow rules -------------------------------------------------------------------------


def test_shadow_rules_are_recorded_never_enforced() -> None:
    p = policy(
        "policies:\n"
        + ALLOW_PAY
        + """\
  - {name: would_deny, when: 'args.amount > 10.0', effect: deny, reason: s, mode: shadow, risk: 0.9, tools: [pay]}
  - {name: would_fail, when: 'args.nope > 1', effect: require_approval, reason: s, mode: shadow, tools: [pay]}
  - {name: quiet, when: 'args.amount > 1000.0', effect: deny, reason: s, mode: shadow, tools: [pay]}
"""
    )
    decision = decide(p)
    assert decision.effect.value == "allow" and decision.risk == 0.0
    assert decision.matched == ("pay_alone",)
    assert decision.shadow == (("would_deny", "deny"), ("would_fail", "deny"))
    assert decision.to_json()["shadow"] == [
        {"rule": "would_deny", "effect": "deny"},
        {"rule": "would_fail", "effect": "deny"},
    ]
    # cached decisions do not carry one call's shadow to the next
    assert decide(p, args={"order_id": "o", "customer_id": "c", "amount": 5.0}).shadow == (
        ("would_fail", "deny"),
    )
    assert "shadow" not in decide(p, "note", EffectClass.WRITE).to_json()


def test_a_score_rule_cannot_be_a_shadow() -> None:
    found = issues(
        "policies:\n  - {name: s, when: 'true', effect: score, risk: 0.2, reason: s, mode: shadow}\n"
    )
    assert len(found) == 1 and "cannot be a shadow rule" in found[0]


# -- windows as compiled ---------------------------------------------------------------------


def test_a_bare_group_by_that_is_not_an_argument_is_a_load_error() -> None:
    found = issues(
        """\
windows:
  per_requestor: {tool: pay, group_by: requestor, period: 24h}
"""
    )
    assert len(found) == 1
    assert found[0].startswith("shop.yaml:13: windows.per_requestor.group_by:")
    assert "'requestor' is not an argument of tool 'pay'" in found[0]
    assert "'amount', 'customer_id', 'order_id'" in found[0]
    # the registry's parameters count where the spec has no schema
    found = issues(
        "windows:\n  w: {tool: refund, group_by: requestor, period: 24h}\n",
        tool_params={"refund": frozenset({"order_id"})},
    )
    assert "'requestor' is not an argument of tool 'refund'" in found[0]


def test_window_expressions_over_args_and_facts() -> None:
    p = policy(
        FACTS
        + """\
windows:
  per_customer: {tool: pay, group_by: customer_id, period: 24h}
  per_order_customer: {tools: [pay, refund], group_by: facts.order.customer_id, period: 24h}
  amounts: {tool: pay, aggregate: max, field: amount, period: 24h}
  customers: {tool: pay, aggregate: count_distinct, field: 'args.customer_id + "/" + tenant', period: 1h}
"""
    )
    w = p.windows
    assert w["per_customer"].group_by is not None
    assert w["per_customer"].group_by.source == "args.customer_id"
    assert w["per_order_customer"].tools == ("pay", "refund")
    assert w["per_order_customer"].facts == {"order"}
    # recording into a fact-grouped window needs the fact, even with no rule reading it
    assert p.for_tool("refund").facts == {"order"}
    assert w["amounts"].entry_of(activation()) == (50.0, None)
    value, item = w["customers"].entry_of(activation())
    assert value == 1.0 and item is not None and len(item) == 64
    assert w["per_order_customer"].group_of(activation(facts={"order": {"customer_id": 7}})) == "7"


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("{tool: pay, aggregate: sum, period: 1h}", "aggregate 'sum' needs 'field'"),
        ("{tool: pay, aggregate: max, period: 1h}", "aggregate 'max' needs 'field'"),
        ("{tool: pay, tools: [refund], period: 1h}", "'tool' or its 'tools', one of the two"),
        ("{period: 1h}", "'tool' or its 'tools', one of the two"),
        ("{tools: [pay, nope], period: 1h}", "not declared under 'tools'"),
        ("{tool: pay, group_by: facts.nope.id, period: 1h}", "fact 'nope', which is not declared"),
        ("{tool: pay, group_by: window.other, period: 1h}", "undeclared reference to 'window'"),
    ],
)
def test_window_spec_errors(window: str, message: str) -> None:
    found = issues(f"windows:\n  w: {window}\n")
    assert any(message in i for i in found), found


# -- results and fingerprints ---------------------------------------------------------------


def test_pending_carries_its_rules_over_the_wire() -> None:
    pending = Pending("apr_1", "a1", "lead", NOW, ("big payment",), ("big_pay", "default:tier"))
    wire = to_wire(pending)
    assert wire["rules"] == ["big_pay", "default:tier"]
    assert from_wire(wire) == pending


PINNED = """\
name: pinned
version: "1"
owner: tests@example.com
tier: approve
tools:
  get_order: {effect: read}
  pay: {effect: money}
facts:
  order: {tool: get_order, args: {order_id: args.order_id}}
windows:
  per_customer: {tool: pay, group_by: customer_id, period: 24h}
policies:
  - {name: big, when: 'args.amount > 100.0', effect: require_approval, reason: big, risk: 0.5}
"""


def test_a_spec_without_new_keys_keeps_its_fingerprints() -> None:
    """Both fingerprints as the Warden before these keys computed them."""
    loaded = load_spec_text(PINNED, "p.yaml")
    assert loaded.fingerprint == "e41db1d00529db69018c037632c77b07f25516b8c7d4d59361e9b1253524e1f0"
    assert Policy(loaded).fingerprint == (
        "d9320f91219fedbe306b3cb74787a0d27d837b564568305565f06830bda4eed6"
    )
    shadowed = load_spec_text(PINNED.replace("risk: 0.5}", "risk: 0.5, mode: shadow}"), "p.yaml")
    assert shadowed.fingerprint != loaded.fingerprint
    assert Policy(shadowed).fingerprint != Policy(loaded).fingerprint
    reviewed = load_spec_text(PINNED + "risk: {review_at: 0.7}\n", "p.yaml")
    assert Policy(reviewed).fingerprint != Policy(loaded).fingerprint


# -- at the gateway ------------------------------------------------------------------------

GATEWAY_RULES = """\
  - {name: large_pay, when: 'tool.name == "pay" && args.amount > 50.0', effect: score, risk: 0.4, reason: large}
  - {name: after_risky_call, when: 'run.risk >= 0.4', effect: require_approval, reason: risky run, tools: [save]}
  - {name: blocked_key, when: 'tool.name == "save" && principal.key == "k_blocked"', effect: deny, reason: key blocked}
  - name: not_before_2026
    when: tool.name == "save" && now < timestamp("2026-01-01T00:00:00Z")
    effect: deny
    reason: saves open in 2026
  - {name: would_cap_values, when: 'tool.name == "save" && args.value > 5', effect: deny, reason: cap, mode: shadow}
limits:"""


def _gateway(store_url: str, when: list[datetime]) -> Any:
    from conftest import SPEC, Effects, make_gateway

    spec = SPEC.replace("limits:", GATEWAY_RULES, 1)
    return make_gateway(store_url, Effects(), spec, clock=lambda: when[0])


def test_the_context_at_the_gateway(store_url: str) -> None:
    import asyncio

    from warden import Allowed, Denied
    from warden.ledger import iter_events

    when = [datetime(2025, 6, 1, tzinfo=UTC)]
    gw = _gateway(store_url, when)

    async def go() -> None:
        async with gw.run(tenant="t", agent="bot", task="context") as run:
            early = await run.call("save", {"key": "a", "value": 1})
            assert isinstance(early, Denied) and early.rules == ("not_before_2026",)
            when[0] = datetime(2026, 6, 1, tzinfo=UTC)
            assert isinstance(await run.call("save", {"key": "b", "value": 9}), Allowed)
            blocked = await run.call("save", {"key": "c", "value": 1}, api_key="k_blocked")
            assert isinstance(blocked, Denied) and blocked.rules == ("blocked_key",)
            assert run.state.risk == 0.0  # these rules carry no risk
        async with gw.run(tenant="t", agent="bot", task="risk") as run:
            assert run.state.risk == 0.0
            pay = await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 60.0})
            assert isinstance(pay, Allowed) and run.state.risk == 0.4
            after = await run.call("save", {"key": "d", "value": 1})
            assert isinstance(after, Pending) and after.rules == ("after_risky_call",)
            assert after.reasons == ("risky run",)

    try:
        asyncio.run(go())
        shadows = [
            row.event.shadow
            for row in iter_events(gw.store, tenant="t")
            if row.event.type == "decision" and row.event.shadow  # type: ignore[union-attr]
        ]
        assert shadows == [[{"rule": "would_cap_values", "effect": "deny"}]]
    finally:
        gw.close()
