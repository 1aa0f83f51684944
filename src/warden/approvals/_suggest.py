"""A suggested decision for a pending approval, each reason citing where it comes from.

For the human deciding, never instead of them: ``suggest`` looks at what the approval
already holds and at how this tenant's approvers decided the same workflow and rules in
the last 30 days, and says ``approve``, ``reject`` or ``edit`` with its reasons. It is
deterministic (the same approval and history give the same suggestion), explainable
(every reason cites a rule, a fact, an argument's provenance or earlier approvals) and
cheap: the history of a whole page of approvals is one aggregate statement
(``read_history``), the rest is arithmetic on the record.

What it reads, in order:

1. **Facts.** An argument compared with the value of the same name in a fact the decision
   looked up (``args.amount`` with ``facts.order.amount``, ``args.customer_id`` with
   ``facts.order.customer_id``). A number above the fact's → ``edit`` it down to the
   fact's value; a different string → ``reject``. Equal or within: cited in support.
2. **Provenance.** Arguments copied from untrusted text (a ticket's body) are cited with
   where they came from.
3. **History.** At least ``MIN_HISTORY`` decisions of the same tenant, workflow and rules
   in ``HISTORY_DAYS`` days, ``SETTLED_SHARE`` or more of them one way → that way
   (approved, rejected, or approved with edited arguments).
4. Otherwise: ``reject`` when an argument that selects something (an amount, an address,
   an account: not prose, which holds whitespace) came from untrusted text and no fact
   vouches for it (by holding it, or a number at least as large); else ``approve`` (the
   rules' reasons are the only concern, and they are cited).

The rules' reasons are always cited: they are why the action waits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, Protocol

from sqlalchemy import Connection, case, exists, func, literal, select

from warden.ledger import canonical_json
from warden.store import Store
from warden.store._tables import approvals, ledger_events

Action = Literal["approve", "reject", "edit"]
Source = Literal["rule", "fact", "provenance", "history"]

#: how far back the history of earlier decisions goes
HISTORY_DAYS: Final = 30
#: fewer earlier decisions than this say nothing either way
MIN_HISTORY: Final = 3
#: the share of earlier decisions that must agree for the history to suggest their way
SETTLED_SHARE: Final = 0.8
#: earlier decisions linked from a suggestion (the most recent)
RECENT: Final = 3
#: approval states a human decided: approved (then perhaps executed) or rejected
_APPROVED_STATES: Final = ("approved", "executing", "executed", "failed")
_DECIDED_STATES: Final = (*_APPROVED_STATES, "rejected")


class Pending(Protocol):
    """What a suggestion reads of an approval (``ApprovalRecord`` and the API's
    ``ApprovalOut`` both have it)."""

    @property
    def tenant(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def rules(self) -> list[str]: ...
    @property
    def reasons(self) -> list[str]: ...
    @property
    def args(self) -> dict[str, Any]: ...
    @property
    def evidence(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Citation:
    """One reason and its source: ``rule`` (``ref`` the rule's name), ``fact`` (the fact's
    path), ``provenance`` (the argument's path) or ``history`` (an approval id, or the
    workflow and rules when there is none)."""

    source: Source
    ref: str
    text: str


@dataclass(frozen=True, slots=True)
class Earlier:
    approval_id: str
    decision: Literal["approved", "edited", "rejected"]
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class History:
    """How the same tenant's approvers decided the same workflow and rules lately."""

    approved: int = 0
    edited: int = 0
    rejected: int = 0
    recent: tuple[Earlier, ...] = ()
    days: int = HISTORY_DAYS

    @property
    def total(self) -> int:
        return self.approved + self.edited + self.rejected


@dataclass(frozen=True, slots=True)
class Suggestion:
    action: Action
    summary: str
    reasons: tuple[Citation, ...]
    history: History
    #: ``edit``: the arguments suggested (the changed ones); None otherwise
    args: dict[str, Any] | None = field(default=None)


#: (tenant, workflow, the rules as stored: canonical JSON of the list)
HistoryKey = tuple[str, str, str]


def history_key(item: Pending) -> HistoryKey:
    return (item.tenant, item.workflow, canonical_json(list(item.rules)))


def read_history(
    conn: Connection, keys: Iterable[HistoryKey], now: datetime, *, days: int = HISTORY_DAYS
) -> dict[HistoryKey, History]:
    """The history of every key, in one statement: decided approvals of the keys' tenants,
    workflows and rules since ``now - days``, counted per key and verdict, with the
    ``RECENT`` most recent of each. An approval counts as *edited* when its
    ``approval_decided`` event on the ledger says so (the approvals row keeps only the
    arguments as approved); an archived event makes it count as approved."""
    wanted = set(keys)
    if not wanted:
        return {}
    a, e = approvals, ledger_events
    edited = (
        exists()
        .where(
            e.c.stream == a.c.run_id,
            e.c.type == "approval_decided",
            e.c.payload.like('%"decision":"edited"%'),
            e.c.payload.like(literal('%"approval_id":"') + a.c.approval_id + literal('"%')),
        )
        .correlate(a)
    )
    verdict = case(
        (a.c.state == "rejected", literal("rejected")),
        (edited, literal("edited")),
        else_=literal("approved"),
    )
    decided = (
        select(
            a.c.tenant,
            a.c.workflow,
            a.c.rules,
            a.c.approval_id,
            a.c.decided_at,
            verdict.label("verdict"),
        )
        .where(
            a.c.tenant.in_(sorted({k[0] for k in wanted})),
            a.c.workflow.in_(sorted({k[1] for k in wanted})),
            a.c.rules.in_(sorted({k[2] for k in wanted})),
            a.c.state.in_(_DECIDED_STATES),
            a.c.decided_at >= now - timedelta(days=days),
        )
        .subquery("decided")
    )
    d = decided.c
    group = (d.tenant, d.workflow, d.rules)

    def count(which: str) -> Any:
        return func.sum(case((d.verdict == which, 1), else_=0)).over(partition_by=group)

    ranked = select(
        *group,
        d.approval_id,
        d.decided_at,
        d.verdict,
        func.row_number()
        .over(partition_by=group, order_by=(d.decided_at.desc(), d.approval_id.desc()))
        .label("rn"),
        count("approved").label("n_approved"),
        count("edited").label("n_edited"),
        count("rejected").label("n_rejected"),
    ).subquery("ranked")
    r = ranked.c
    rows = conn.execute(
        select(ranked).where(r.rn <= RECENT).order_by(r.tenant, r.workflow, r.rules, r.rn)
    ).mappings()
    counts: dict[HistoryKey, tuple[int, int, int]] = {}
    recent: dict[HistoryKey, list[Earlier]] = {}
    for row in rows:
        key = (row["tenant"], row["workflow"], row["rules"])
        if key not in wanted:
            continue
        counts[key] = (int(row["n_approved"]), int(row["n_edited"]), int(row["n_rejected"]))
        recent.setdefault(key, []).append(
            Earlier(row["approval_id"], row["verdict"], row["decided_at"])
        )
    return {key: History(*counts[key], recent=tuple(recent[key]), days=days) for key in counts}


def suggest_many(store: Store, items: Sequence[Pending], now: datetime) -> list[Suggestion]:
    """A suggestion for each of ``items`` (one statement for their whole history)."""
    if not items:
        return []
    keys = [history_key(i) for i in items]
    with store.read() as conn:
        found = read_history(conn, keys, now)
    return [suggest(item, found.get(key, History())) for item, key in zip(items, keys, strict=True)]


# -- the suggestion itself: arithmetic on the record ------------------------------------------


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:  # nan, inf
        return None


def _fact_leaves(facts: dict[str, Any]) -> dict[str, list[tuple[str, Any]]]:
    """Scalar values in the facts by their own name: ``{"amount": [("facts.order.amount",
    120.0)]}`` (a fact's top-level fields, or the fact itself when it is a scalar)."""
    found: dict[str, list[tuple[str, Any]]] = {}
    for name, value in facts.items():
        if isinstance(value, dict):
            for key, leaf in value.items():
                if not isinstance(leaf, dict | list):
                    found.setdefault(str(key), []).append((f"facts.{name}.{key}", leaf))
        elif not isinstance(value, list):
            found.setdefault(str(name), []).append((f"facts.{name}", value))
    return found


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _rules(item: Pending) -> list[Citation]:
    rules, reasons = list(item.rules), list(item.reasons)
    if len(rules) == len(reasons):
        return [Citation("rule", rule, reason) for rule, reason in zip(rules, reasons, strict=True)]
    why = "; ".join(reasons) or "it asked for approval"
    return [Citation("rule", rule, why) for rule in rules]


def _provenance(item: Pending) -> tuple[set[str], list[Citation]]:
    provenance = item.evidence.get("provenance") or {}
    untrusted = [str(a) for a in provenance.get("untrusted_args") or []]
    origins = provenance.get("origins") or {}
    cited = []
    for name in untrusted:
        where = ", ".join(
            f"{o.get('tool', '?')}.{o.get('field', '?')} ({o.get('action_id', '?')})"
            for o in origins.get(name) or []
            if isinstance(o, dict)
        )
        cited.append(
            Citation(
                "provenance",
                f"args.{name}",
                f"args.{name} was copied from untrusted text"
                + (f": {where}" if where else "")
                + "; check it against the facts",
            )
        )
    return set(untrusted), cited


def _history_reason(item: Pending, history: History) -> Citation:
    scope = f"{item.workflow} / {', '.join(item.rules) or 'no rule'}"
    if history.total == 0:
        return Citation(
            "history",
            scope,
            f"no earlier decision of {scope} in this tenant in the last {history.days} days",
        )
    return Citation(
        "history",
        scope,
        f"in the last {history.days} days, earlier approvals of {scope} in this tenant were "
        f"approved {history.approved}, approved with edits {history.edited}, rejected "
        f"{history.rejected}",
    )


def suggest(item: Pending, history: History) -> Suggestion:
    """The suggestion for one pending approval given its ``history`` (see the module)."""
    untrusted, provenance = _provenance(item)
    facts = item.evidence.get("facts") or {}
    leaves = _fact_leaves(facts) if isinstance(facts, dict) else {}
    support: list[Citation] = []
    over: list[Citation] = []  # numbers above a fact's: edited down
    contradicted: list[Citation] = []  # strings unlike a fact's: rejected
    edits: dict[str, Any] = {}
    checked: set[str] = set()  # arguments a fact vouches for (within it, or equal)
    for name, value in item.args.items():
        taint = " (from untrusted text)" if name in untrusted else ""
        for path, fact in leaves.get(name, ()):
            number, ceiling = _number(value), _number(fact)
            if number is not None and ceiling is not None:
                if number > ceiling:
                    edits.setdefault(name, fact)
                    over.append(
                        Citation(
                            "fact",
                            path,
                            f"args.{name} {_short(value)}{taint} is above {path} {_short(fact)}",
                        )
                    )
                else:
                    checked.add(name)
                    support.append(
                        Citation(
                            "fact",
                            path,
                            f"args.{name} {_short(value)} is within {path} {_short(fact)}",
                        )
                    )
            elif isinstance(value, str) and isinstance(fact, str):
                if value != fact:
                    contradicted.append(
                        Citation(
                            "fact",
                            path,
                            f"args.{name} {_short(value)}{taint} differs from {path} "
                            f"{_short(fact)}",
                        )
                    )
                else:
                    checked.add(name)
                    support.append(Citation("fact", path, f"args.{name} matches {path}"))
    rules = _rules(item)
    past = _history_reason(item, history)
    links = tuple(
        Citation("history", e.approval_id, f"{e.decision} {e.decided_at.date().isoformat()}")
        for e in history.recent
    )
    action: Action
    args: dict[str, Any] | None = None
    if contradicted:
        action = "reject"
        summary = "an argument contradicts a fact the decision looked up"
    elif edits:
        action, args = "edit", edits
        summary = "within what the facts allow: " + ", ".join(
            f"{k} at most {_short(v)}" for k, v in edits.items()
        )
    else:
        settled = _settled(history)
        if settled is not None:
            action = settled
            summary = {
                "approve": "approvers approved the same rules lately",
                "reject": "approvers rejected the same rules lately",
                "edit": "approvers mostly edited the arguments of the same rules lately",
            }[settled]
        elif unvouched := sorted(
            n for n in untrusted if n not in checked and not _free_text(item.args.get(n))
        ):
            action = "reject"
            summary = (
                f"{', '.join(unvouched)} came from untrusted text, and neither a fact "
                "nor earlier decisions vouch for it"
            )
        else:
            action = "approve"
            summary = "nothing contradicts the action; the rules' reasons are below"
    reasons = (*contradicted, *over, *provenance, *rules, *support, past, *links)
    return Suggestion(action, summary, tuple(reasons), history, args)


def _free_text(value: Any) -> bool:
    """Prose (a reason, a message body: it holds whitespace) rather than a value that
    selects something (an amount, an address, an account): shown, cited, but it does not
    make the suggestion reject on its own."""
    return isinstance(value, str) and any(c.isspace() for c in value.strip())


def _settled(history: History) -> Action | None:
    total = history.total
    if total < MIN_HISTORY:
        return None
    if history.approved >= SETTLED_SHARE * total:
        return "approve"
    if history.rejected >= SETTLED_SHARE * total:
        return "reject"
    if history.edited >= SETTLED_SHARE * total:
        return "edit"
    return None


__all__ = [
    "HISTORY_DAYS",
    "MIN_HISTORY",
    "RECENT",
    "SETTLED_SHARE",
    "Citation",
    "Earlier",
    "History",
    "Pending",
    "Suggestion",
    "history_key",
    "read_history",
    "suggest",
    "suggest_many",
]
