"""``lint``: rules that can never match, rules that never decide, write tools no rule
mentions; and no warning where a rule can matter."""

from __future__ import annotations

from pathlib import Path

import pytest

from warden.errors import SpecIssue
from warden.policy._lint import lint
from warden.spec import load_spec, load_spec_text

EXAMPLE = Path(__file__).parents[2] / "examples" / "refund_triage" / "workflow.yaml"

HEAD = """name: lint
version: "1"
owner: tests@example.com
tier: approve
tools:
  pay: {effect: money}
  send: {effect: external_message, scope: msg}
  remove: {effect: delete}
  read: {effect: read}
policies:
"""


def _rule(name: str, when: str, effect: str = "deny", tools: str = "") -> str:
    extra = f"\n    tools: {tools}" if tools else ""
    return f"  - name: {name}\n    when: '{when}'\n    effect: {effect}\n    reason: r{extra}\n"


def _lint(*rules: str) -> list[SpecIssue]:
    # every write tool is mentioned, so only the rules under test are warned about
    mention = _rule(
        "all_writes",
        'tool.effect in ["money", "external_message", "delete"] && false == true',
        "allow",
    )
    return [
        i
        for i in lint(load_spec_text(HEAD + "".join(rules) + mention, "lint.yaml"))
        if "all_writes" not in i.message
    ]


@pytest.mark.parametrize(
    ("when", "why"),
    [
        (
            "args.amount > 100 && args.amount < 50",
            "args.amount > 100 && args.amount < 50 cannot all hold",
        ),
        ('tool.name == "pay" && tool.name == "send"', 'tool.name == "pay" && tool.name == "send"'),
        ("args.n == 1 && args.n != 1.0", "args.n == 1 && args.n != 1.0"),
        ('args.c in ["a", "b"] && args.c == "z"', "cannot all hold"),
        ("args.amount >= 10 && 10 > args.amount", "args.amount >= 10 && args.amount < 10"),
        ('args.x == "a" && args.x > 5', "cannot all hold"),
        ("args.amount > 1 && false", "literal 'false'"),
    ],
)
def test_a_rule_that_can_never_match(when: str, why: str) -> None:
    issues = _lint(_rule("dead", when))
    assert len(issues) == 1
    assert "rule 'dead' can never match" in issues[0].message and why in issues[0].message
    assert issues[0].line == 12 and issues[0].path == "policies[0].when"


def test_a_tools_list_contradicting_the_condition_can_never_match() -> None:
    issues = _lint(_rule("dead", 'tool.name == "send" && args.amount > 1', tools="[pay]"))
    assert [i.message.split(":")[0] for i in issues] == ["rule 'dead' can never match"]


@pytest.mark.parametrize(
    "when",
    [
        "args.amount > 50 && args.amount < 100",
        "args.amount >= 10 && args.amount <= 10",
        'args.c in ["a", "b"] && args.c != "a"',
        "args.a > 100 && args.b < 50",  # different paths
        "args.amount > 100 || args.amount < 50",  # not a conjunction
        "args.x == 1 && args.x == 1.0",  # CEL: 1 == 1.0
        "size(args.items) > 3 && size(args.items) < 2",  # not a path: not reasoned about
    ],
)
def test_a_rule_that_can_match_is_not_reported(when: str) -> None:
    assert _lint(_rule("alive", when)) == []


def test_same_condition_with_a_weaker_effect_never_decides() -> None:
    issues = _lint(
        _rule("block", 'tool.name == "pay" && args.amount > 100.0'),
        _rule("ask", 'args.amount > 100.0 && tool.name == "pay"', "require_approval"),
    )
    assert len(issues) == 1
    assert issues[0].path == "policies[1].when"
    assert (
        "rule 'ask' (require_approval) never decides: rule 'block' has the same condition"
        in issues[0].message
    )


def test_a_superset_of_a_deny_rules_conditions_never_decides() -> None:
    issues = _lint(
        _rule("block", 'tool.name == "pay" && args.currency == "XXX"'),
        _rule("block_big", 'tool.name == "pay" && args.currency == "XXX" && args.amount > 10.0'),
        _rule(
            "ask_big",
            'tool.name == "pay" && args.amount > 500.0 && args.currency == "XXX"',
            "escalate",
        ),
    )
    assert [(i.path, i.message.split(" never")[0]) for i in issues] == [
        ("policies[1].when", "rule 'block_big' (deny)"),
        ("policies[2].when", "rule 'ask_big' (escalate)"),
    ]
    assert all("whenever it matches, rule 'block' matches too" in i.message for i in issues)


def test_a_narrower_comparison_is_implied() -> None:
    issues = _lint(
        _rule("block_over_100", 'tool.name == "pay" && args.amount > 100'),
        _rule("ask_over_200", 'tool.name in ["pay"] && args.amount >= 200.5', "require_approval"),
    )
    assert len(issues) == 1 and "rule 'ask_over_200'" in issues[0].message


@pytest.mark.parametrize(
    ("strong", "weak"),
    [
        # a weaker rule with a condition of its own
        (
            _rule("block", 'tool.name == "pay" && args.amount > 100.0'),
            _rule("ask", 'tool.name == "pay"', "require_approval"),
        ),
        # the stronger rule is for another tool
        (
            _rule("block", 'tool.name == "send"'),
            _rule("ask", 'tool.name == "pay"', "require_approval"),
        ),
        # the same effect, not deny: its approvers and SLA may matter
        (
            _rule("ask1", 'tool.name == "pay"', "require_approval"),
            _rule("ask2", 'tool.name == "pay" && args.a > 1', "require_approval"),
        ),
        # an allow lifts the default deny of a delete even when an approval rule matches too
        (
            _rule("ask", 'tool.name == "remove"', "require_approval"),
            _rule("ok", 'tool.name == "remove"', "allow"),
        ),
        # a string equality implies no ordering (args.x > 5 errors for a string)
        (_rule("block", "args.x > 5"), _rule("ask", 'args.x == "a"', "require_approval")),
        # the tools list narrows the stronger rule
        (
            _rule("block", "args.amount > 1", tools="[send]"),
            _rule("ask", 'tool.name == "pay" && args.amount > 1', "escalate"),
        ),
    ],
)
def test_a_rule_that_can_decide_is_not_reported_as_shadowed(strong: str, weak: str) -> None:
    assert _lint(strong, weak) == []


def test_write_tools_no_rule_mentions() -> None:
    spec = HEAD + _rule("pay_limit", 'tool.name == "pay" && args.amount > 10.0')
    issues = lint(load_spec_text(spec, "lint.yaml"))
    assert [i.path for i in issues] == ["tools.send", "tools.remove"]
    assert "write tool 'send' (external_message) is not mentioned by any rule" in issues[0].message
    assert "(approve: require_approval)" in issues[0].message
    assert "(approve: deny)" in issues[1].message
    assert issues[0].line == 7


def test_a_tool_mentioned_by_effect_or_scope_is_not_reported() -> None:
    spec = (
        HEAD
        + _rule("pay_limit", 'tool.name == "pay" && args.amount > 10.0')
        + _rule("no_deletes", 'tool.effect == "delete"')
        + _rule("msg", 'tool.scope == "msg" && args.to == "x"', "require_approval")
    )
    assert lint(load_spec_text(spec, "lint.yaml")) == []


def test_the_demo_spec_has_one_warning_its_unmentioned_escalation_tool() -> None:
    issues = lint(load_spec(EXAMPLE))
    assert [i.path for i in issues] == ["tools.escalate_to_human"]


def test_a_rule_that_does_not_compile_is_left_to_the_loader() -> None:
    loaded = load_spec_text(HEAD + _rule("broken", "args.amount >> 1"), "lint.yaml")
    assert [i.path for i in lint(loaded)] == ["tools.pay", "tools.send", "tools.remove"]


def test_a_condition_on_the_tool_none_of_its_tools_meets_can_never_match() -> None:
    issues = _lint(_rule("dead", 'tool.name in ["pay", "send"] && tool.effect == "delete"'))
    assert len(issues) == 1
    assert 'tool.effect == "delete" holds for none of the tools it applies to' in issues[0].message
    assert (
        'pay: tool.effect is "money"; send: tool.effect is "external_message"' in issues[0].message
    )
    scoped = _lint(_rule("dead", 'tool.scope == "admin"', tools="[send]"))
    assert len(scoped) == 1 and 'send: tool.scope is "msg"' in scoped[0].message


@pytest.mark.parametrize(
    "when",
    [
        'tool.name in ["pay", "remove"] && tool.effect == "delete"',  # remove is a delete
        'tool.name == "pay" && tool.scope == "payments"',  # pay's scope is not in the spec
        'tool.effect == "delete"',  # not pinned to tools
    ],
)
def test_a_condition_on_the_tool_some_tool_may_meet_is_not_reported(when: str) -> None:
    assert _lint(_rule("alive", when)) == []
