"""Replay τ²-bench retail tasks through a Warden gateway, and score them.

For each task the harness plays the conversation's side of the store's tools:

1. **Gold replay.** The task's gold actions are proposed in order, in one run (one run is
   one conversation); a write comes back ``Pending`` (the policy's "explicit user
   confirmation"), the harness approves it as the customer and executes it. A gold action
   the gateway denies is a **false positive**, reported with its rules.
2. **State.** The same actions are applied to a second copy of the database by calling the
   tools directly, without Warden; the task succeeds when the two databases are equal
   (τ²'s criterion is the database after the gold actions).

The gold lists of tasks 70-113 (and 36) hold only their writes: the reads a conversation
makes, authentication included, are left out because they change nothing. The policy
allows no write for a user who was not authenticated, so before such a task the harness
adds the authentication the conversation must have had: ``find_user_id_by_email`` with
the email of the user whose orders the gold actions touch.

Violations (``violations.py``) reuse ``propose``: a prefix of the gold conversation, then
one call that breaks one rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from examples.tau2_retail.data import Action, Dataset, Task
from examples.tau2_retail.store import RetailState

if TYPE_CHECKING:
    from examples.tau2_retail.violations import Violation
from warden import Allowed, Denied, Failed, FailureKind, Gateway, Pending, ToolError, load_spec
from warden.tools import tool_def_of

__all__ = [
    "SPEC",
    "TENANT",
    "Harness",
    "Outcome",
    "TaskReport",
    "apply_directly",
    "conversation",
]

SPEC = Path(__file__).parent / "workflow.yaml"
TENANT = "tau2-retail"
AGENT = "retail-agent"
TASK_TYPE = "customer_service"
LOGIN_TOOLS = ("find_user_id_by_email", "find_user_id_by_name_zip")


@dataclass(frozen=True)
class Outcome:
    """How one proposed call ended."""

    action: Action
    #: ``executed`` (the tool ran and returned), ``tool_error`` (the gateway allowed it,
    #: the store refused it), ``denied`` (the gateway refused it), ``pending`` (sent for
    #: approval and left there), ``failed`` (anything else)
    status: str
    rules: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    #: the rules that asked for approval, when it went to the customer first
    approval_rules: tuple[str, ...] = ()

    @property
    def blocked(self) -> bool:
        return self.status in ("denied", "pending")


@dataclass
class TaskReport:
    task: str
    outcomes: list[Outcome] = field(default_factory=list)
    #: records that differ between the governed run and the direct application
    state_diff: list[str] = field(default_factory=list)
    #: per gold action, what the store answered when it was applied directly: None when
    #: it accepted it, else its error
    direct: list[str | None] = field(default_factory=list)

    @property
    def refused(self) -> list[tuple[Outcome, str | None]]:
        """Gold actions the gateway did not let through, with the store's own answer."""
        return [
            (o, d)
            for o, d in zip(self.outcomes, self.direct, strict=True)
            if o.status in ("denied", "pending", "failed")
        ]

    @property
    def false_positives(self) -> list[Outcome]:
        """Refused by the gateway, accepted by the store: the policy is stricter than it."""
        return [o for o, d in self.refused if d is None]

    @property
    def store_refused(self) -> list[tuple[Outcome, str]]:
        """Refused by the gateway and by the store: gold actions that cannot succeed."""
        return [(o, d) for o, d in self.refused if d is not None]

    @property
    def state_ok(self) -> bool:
        return not self.state_diff


def owner_of(state: RetailState, action: Action) -> str | None:
    """The user a gold action is about, as the database says before the task."""
    args = action.arguments
    if action.name == "find_user_id_by_email":
        return state.user_by_email(str(args.get("email", "")))
    if action.name == "find_user_id_by_name_zip":
        return state.user_by_name_zip(
            str(args.get("first_name", "")),
            str(args.get("last_name", "")),
            str(args.get("zip", "")),
        )
    if "order_id" in args:
        order = state.get("orders", str(args["order_id"]))
        return None if order is None else str(order["user_id"])
    if "user_id" in args:
        return str(args["user_id"])
    return None


def conversation(task: Task, state: RetailState) -> list[Action]:
    """The task's gold actions, behind the authentication a write-only gold list omits."""
    actions = list(task.actions)
    if any(a.name in LOGIN_TOOLS for a in actions):
        return actions
    users = [u for u in (owner_of(state, a) for a in actions) if u is not None]
    if not users:
        return actions
    user = state.get("users", users[0])
    assert user is not None
    return [Action("find_user_id_by_email", {"email": user["email"]}), *actions]


def apply_directly(state: RetailState, actions: Iterable[Action]) -> list[str | None]:
    """Call the tools without Warden: per action, the error the store raised, or None."""
    fns: dict[str, Any] = {}
    for fn in state.tools():
        found = tool_def_of(fn)
        assert found is not None
        fns[found.name] = fn
    errors: list[str | None] = []
    for action in actions:
        try:
            fns[action.name](**action.arguments)
        except ToolError as exc:
            errors.append(str(exc))
        else:
            errors.append(None)
    return errors


class Harness:
    """One gateway over one database, reset before each task."""

    def __init__(self, dataset: Dataset, *, store: str, spec: Path = SPEC) -> None:
        self.dataset = dataset
        self.state = dataset.state()
        self.gateway = Gateway(load_spec(spec), self.state.tools(), store=store)
        #: who confirms writes (the conversation's user)
        self.customer = "unknown"

    def close(self) -> None:
        self.gateway.close()

    def open(self, task: str) -> Any:
        # No ``end_user``: the harness replays one customer's conversations hundreds of
        # times, past any per-person cap on approval requests a real deployment would set.
        return self.gateway.open_run(
            tenant=TENANT, agent=AGENT, task=f"tau2 retail task {task}", task_type=TASK_TYPE
        )

    async def propose(self, run: Any, action: Action, *, confirm: bool = True) -> Outcome:
        """One call; a write sent for confirmation is approved by the customer (``confirm``)."""
        result = await run.call(action.name, dict(action.arguments))
        approval_rules: tuple[str, ...] = ()
        if isinstance(result, Pending) and confirm:
            approval_rules = result.rules
            await self.gateway.approve(
                result.approval_id,
                approver=f"customer:{self.customer}",
                roles=["customer"],
                rationale="The customer confirmed the listed action details (yes).",
            )
            result = await self.gateway.execute_approved(result.approval_id)
        match result:
            case Allowed():
                return Outcome(action, "executed", approval_rules=approval_rules)
            case Denied(rules=rules, reasons=reasons):
                return Outcome(action, "denied", rules, reasons, approval_rules)
            case Pending(rules=rules, reasons=reasons):
                return Outcome(action, "pending", rules, reasons)
            case Failed(kind=FailureKind.TOOL_ERROR, detail=detail):
                return Outcome(
                    action, "tool_error", reasons=(detail,), approval_rules=approval_rules
                )
            case Failed(kind=kind, detail=detail):
                return Outcome(action, "failed", (str(kind),), (detail,), approval_rules)
        raise AssertionError(f"unexpected result {result!r}")  # pragma: no cover

    async def replay(
        self, actions: Sequence[Action], *, task: str, user: str | None
    ) -> list[Outcome]:
        """``actions`` in one run on the state as it is."""
        self.customer = user or "unknown"
        run = self.open(task)
        try:
            return [await self.propose(run, a) for a in actions]
        finally:
            run.finish("completed")

    async def gold(self, task: Task) -> TaskReport:
        """Replay a task's gold conversation and compare the database with the direct one."""
        self.state.reset()
        actions = conversation(task, self.state)
        user = next((u for u in (owner_of(self.state, a) for a in actions) if u), None)
        report = TaskReport(task.id)
        report.outcomes = await self.replay(actions, task=task.id, user=user)
        expected = self.dataset.state()
        report.direct = apply_directly(expected, actions)
        report.state_diff = self.state.diff(expected)
        return report

    async def violation(self, v: Violation) -> tuple[list[Outcome], Outcome]:
        """The violation's prefix (writes confirmed), its fixture, then its call, unconfirmed:
        the prefix's outcomes and the call's."""
        self.state.reset()
        user = next((u for u in (owner_of(self.state, a) for a in v.prefix) if u), None)
        self.customer = user or "unknown"
        run = self.open(v.task)
        try:
            prefix = [await self.propose(run, action) for action in v.prefix]
            if v.fixture is not None:
                v.fixture(self.state)
            return prefix, await self.propose(run, v.call, confirm=False)
        finally:
            run.finish("completed")
