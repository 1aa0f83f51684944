"""A deterministic rule set shared by Warden's benchmark and its peers.

Every rule has the one shape all three engines can express:

    when tool == <tool> and args.<arg> <op> <value> then <effect>

The generator is seeded and uses only :mod:`random` with string/int seeds, so the
same ``(n, n_tools, seed)`` gives the same rules on every machine and Python run
(string seeds do not depend on ``PYTHONHASHSEED``).

Decision semantics (the reference every peer is checked against): every rule is
evaluated, the most restrictive matching effect wins (``deny`` >
``require_approval`` > ``allow``), and a call that matches nothing is allowed.

Restrictions that keep the rule set expressible in every peer (see README):

* numeric arguments only use ``>``, ``>=`` and ``<``; string arguments only use
  ``==`` and ``!=`` (AgentMesh's expression engine has no numeric ``==``/``!=``);
* numbers are non-negative, strings are ``[A-Za-z0-9_]`` only (no quotes, no
  spaces, so no `` and `` inside a literal);
* every tool takes all four arguments, so no rule ever reads a missing argument
  (AGT treats a missing field as "no match", CEL raises, AgentMesh reads 0).
"""

from __future__ import annotations

import json
import math
import operator
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal[">", ">=", "<", "==", "!="]
EffectName = Literal["deny", "require_approval", "allow"]

#: Twenty realistic agent tools.  None of them is one of the action names AGT's
#: ``StatelessKernel`` gates globally (``send_email``, ``file_write``,
#: ``code_execution``, ``database_write``), so the kernel path never denies on
#: its own and every decision comes from the rule set.
TOOL_NAMES: tuple[str, ...] = (
    "issue_refund",
    "transfer_funds",
    "create_invoice",
    "pay_vendor",
    "charge_card",
    "send_payout",
    "update_order",
    "cancel_subscription",
    "apply_discount",
    "purchase_credits",
    "book_travel",
    "reimburse_expense",
    "adjust_balance",
    "grant_credit",
    "place_order",
    "renew_contract",
    "export_report",
    "notify_customers",
    "create_coupon",
    "schedule_payment",
)

#: Argument name -> kind.  Every tool takes all of them.
ARG_KINDS: dict[str, str] = {
    "amount": "number",  # float in calls, int thresholds in rules
    "currency": "string",
    "recipient": "string",
    "count": "int",
}

NUMERIC_OPS: tuple[Op, ...] = (">", ">=", "<")
STRING_OPS: tuple[Op, ...] = ("==", "!=")

EFFECT_RANK: dict[str, int] = {"allow": 0, "require_approval": 1, "deny": 2}
RANK_EFFECT: dict[int, str] = {v: k for k, v in EFFECT_RANK.items()}

_AMOUNT_THRESHOLDS = (250, 500, 1000, 2500, 5000, 10000)
_COUNT_THRESHOLDS = (5, 10, 25, 50, 100)
_AMOUNT_SMALL = (10, 20, 50)
_COUNT_SMALL = (2, 3)
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD")
RECIPIENTS = (
    "acct_internal",
    "vendor_acme",
    "vendor_globex",
    "cust_1042",
    "cust_2231",
    "offshore_xyz",
)

_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class Rule:
    """``when tool == <tool> and args.<arg> <op> <value> then <effect>``."""

    name: str
    tool: str
    arg: str
    op: Op
    value: int | float | str
    effect: EffectName
    reason: str

    def matches(self, tool: str, args: dict[str, Any]) -> bool:
        """Plain-Python truth for this rule (the reference semantics)."""
        return tool == self.tool and _PY_OPS[self.op](args[self.arg], self.value)


def tool_name(index: int) -> str:
    """Name of tool ``index``; past the twenty named tools, ``tool_<index>``."""
    return TOOL_NAMES[index] if index < len(TOOL_NAMES) else f"tool_{index}"


def make_rules(n: int, n_tools: int = 20, seed: int = 7) -> list[Rule]:
    """``n`` deterministic rules spread round-robin over ``n_tools`` tools.

    With the defaults, 20 rules give one rule per tool and 100 rules give five.
    The list is shuffled (seeded) so effects are not clustered by position.
    """
    if n < 0 or n_tools < 1:
        raise ValueError("n must be >= 0 and n_tools >= 1")
    rng = random.Random(f"warden-peer-rules:{seed}:{n}:{n_tools}")
    args = list(ARG_KINDS)
    rules: list[Rule] = []
    for i in range(n):
        tool = tool_name(i % n_tools)
        arg = rng.choices(args, weights=(45, 20, 15, 20))[0]
        kind = ARG_KINDS[arg]
        value: int | float | str
        if kind in ("number", "int"):
            # Upper limits ("amount > 2500") or small-value carve-outs ("amount < 20").
            op = rng.choices(NUMERIC_OPS, weights=(5, 3, 2))[0]
            if kind == "number":
                value = rng.choice(_AMOUNT_SMALL if op == "<" else _AMOUNT_THRESHOLDS)
            else:
                value = rng.choice(_COUNT_SMALL if op == "<" else _COUNT_THRESHOLDS)
        else:
            # "== <unusual value>" (e.g. recipient == "offshore_xyz") or
            # "!= <usual value>" (e.g. currency != "USD").
            pool = CURRENCIES if arg == "currency" else RECIPIENTS
            op = rng.choices(STRING_OPS, weights=(3, 2))[0]
            value = rng.choice(pool[1:]) if op == "==" else pool[0]
        effect: EffectName = rng.choices(("deny", "require_approval", "allow"), weights=(3, 4, 3))[
            0
        ]
        rules.append(
            Rule(
                name=f"r{i:03d}_{effect}_{tool}_{arg}",
                tool=tool,
                arg=arg,
                op=op,
                value=value,
                effect=effect,
                reason=f"{effect} {tool} when args.{arg} {op} {value!r}",
            )
        )
    rng.shuffle(rules)
    return rules


def _literal(value: int | float | str) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # CEL string literal: double quotes, escapes as JSON
    return repr(value)


def to_cel(rule: Rule) -> str:
    """The rule's condition in CEL, e.g. ``tool.name == "issue_refund" && args.amount > 250``."""
    return f"tool.name == {_literal(rule.tool)} && args.{rule.arg} {rule.op} {_literal(rule.value)}"


def to_cel_args_only(rule: Rule) -> str:
    """The condition without the tool clause, for engines that scope rules by tool."""
    return f"args.{rule.arg} {rule.op} {_literal(rule.value)}"


def to_warden_rule(rule: Rule, *, scope_by_tools_field: bool = False) -> dict[str, Any]:
    """A dict in the shape of Warden's spec ``Rule`` (name/when/effect/reason/tools).

    ``scope_by_tools_field=False`` puts the tool test in the CEL (same text the CEL
    peer evaluates); ``True`` uses Warden's ``tools:`` field and leaves only the
    argument test in ``when``.
    """
    if scope_by_tools_field:
        return {
            "name": rule.name,
            "when": to_cel_args_only(rule),
            "effect": rule.effect,
            "reason": rule.reason,
            "tools": [rule.tool],
        }
    return {"name": rule.name, "when": to_cel(rule), "effect": rule.effect, "reason": rule.reason}


def make_call(tool_index: int, seed: int) -> tuple[str, dict[str, Any]]:
    """A representative call to tool ``tool_index``: ``(tool_name, args)``.

    ``args`` holds every argument any rule may mention (see :data:`ARG_KINDS`).
    """
    rng = random.Random(f"warden-peer-call:{seed}:{tool_index}")
    # Skewed like real traffic: most amounts and counts are small, most money moves
    # in USD to known counterparties.
    args: dict[str, Any] = {
        "amount": round(math.exp(rng.uniform(math.log(5.0), math.log(8000.0))), 2),
        "currency": rng.choices(CURRENCIES, weights=(12, 3, 2, 1, 1, 1))[0],
        "recipient": rng.choices(RECIPIENTS, weights=(6, 3, 3, 2, 2, 1))[0],
        "count": int(math.exp(rng.uniform(0.0, math.log(80.0)))),
    }
    return tool_name(tool_index), args


def make_calls(
    n_tools: int = 20, per_tool: int = 3, seed: int = 11
) -> list[tuple[str, dict[str, Any]]]:
    """``per_tool`` calls for each of ``n_tools`` tools, tool-interleaved."""
    return [make_call(t, seed * 1000 + j) for j in range(per_tool) for t in range(n_tools)]


def matching_rules(rules: Iterable[Rule], tool: str, args: dict[str, Any]) -> list[Rule]:
    return [r for r in rules if r.matches(tool, args)]


def reference_decision(rules: Iterable[Rule], tool: str, args: dict[str, Any]) -> str:
    """Most restrictive matching effect; ``allow`` when nothing matches."""
    best = 0
    for r in rules:
        if r.matches(tool, args):
            best = max(best, EFFECT_RANK[r.effect])
    return RANK_EFFECT[best]


def decision_histogram(
    rules: Sequence[Rule], calls: Sequence[tuple[str, dict[str, Any]]]
) -> dict[str, int]:
    counts = Counter(reference_decision(rules, t, a) for t, a in calls)
    counts["no_match"] = sum(1 for t, a in calls if not matching_rules(rules, t, a))
    return {k: counts.get(k, 0) for k in ("deny", "require_approval", "allow", "no_match")}


def no_match_indices(
    rules: Sequence[Rule], calls: Sequence[tuple[str, dict[str, Any]]]
) -> list[int]:
    """Indices of calls that match no rule (every engine must scan the whole set)."""
    return [i for i, (t, a) in enumerate(calls) if not matching_rules(rules, t, a)]


__all__ = [
    "ARG_KINDS",
    "EFFECT_RANK",
    "TOOL_NAMES",
    "Rule",
    "decision_histogram",
    "make_call",
    "make_calls",
    "make_rules",
    "matching_rules",
    "no_match_indices",
    "reference_decision",
    "to_cel",
    "to_cel_args_only",
    "to_warden_rule",
    "tool_name",
]
