"""``warden demo``: the refund-triage workflow end to end, on the embedded store.

A scripted agent works a stream of helpdesk tickets through the gateway; a simulated
approver (with a stated rule) works the approval queue between batches; the summary is
computed from the ledger itself, which is verified at the end.

The agent's model calls go to a fake OpenAI- and Anthropic-compatible upstream on
loopback (``warden.testing.FakeUpstream``, answering from the example's
``fake_models.py``), so the demo needs no network and no key; they are priced at the
declared models' real prices, capped by the spec's budgets and answered from the cache
like real ones, and the summary's economics part is read from their ledger events.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from warden import events as ev
from warden.auth import KeyStore
from warden.economics import data_version
from warden.errors import UsageError, WardenError
from warden.gateway import Gateway, Run
from warden.ledger import iter_events, verify
from warden.policy._engine import REVIEW_RULE
from warden.results import Allowed, Pending
from warden.spec import MODEL_TOOL_PREFIX
from warden.store import Store, default_store_url
from warden.testing import FakeUpstream

BATCH = 25  # tickets between two passes of the approver

#: where the workflow's models find their upstream (``base_url: env:...``, ``credential:
#: env:...``); the demo points them at the fake for its run and restores them after
MODEL_ENV = {
    "openai": ("WARDEN_DEMO_OPENAI_URL", "WARDEN_DEMO_OPENAI_KEY"),
    "anthropic": ("WARDEN_DEMO_ANTHROPIC_URL", "WARDEN_DEMO_ANTHROPIC_KEY"),
}
#: the only key the fake upstream accepts: it checks that Warden sends the model's
#: credential (the agent never has it)
FAKE_KEY = "sk-warden-demo-not-a-real-key"
#: what a ticket's run must have executed to count as a success: the task type's
#: ``success`` (a refund issued, the customer answered, or the ticket escalated)
SUCCESS_TOOLS = frozenset({"issue_refund", "send_message", "escalate_to_human"})


def example_dir() -> Path:
    """The refund-triage example: shipped in the wheel, or in the source checkout."""
    for candidate in (
        Path(__file__).parent / "examples" / "refund_triage",
        Path(__file__).resolve().parents[2] / "examples" / "refund_triage",
    ):
        if (candidate / "workflow.yaml").exists():
            return candidate
    raise UsageError("the refund_triage example is not installed (examples/refund_triage)")


def _load(name: str, directory: Path) -> ModuleType:
    module_name = f"warden_example_refund_triage_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, directory / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def run_demo(
    *,
    store_url: str | None,
    tickets: int,
    seed: int,
    console: Console,
    progress: bool = True,
) -> dict[str, Any]:
    directory = example_dir()
    helpdesk_mod = _load("helpdesk", directory)
    agent_mod = _load("agent", directory)
    approver_mod = _load("approver", directory)
    models_mod = _load("fake_models", directory)
    url = store_url or default_store_url()
    store = Store(url)
    helpdesk_path = Path(".warden") / "helpdesk.db"
    plans = helpdesk_mod.seed(helpdesk_path, tickets, seed)
    helpdesk = helpdesk_mod.Helpdesk(helpdesk_path)
    gateway = Gateway.from_spec(directory / "workflow.yaml", tools=helpdesk.tools(), store=store)
    tenant = f"demo-{uuid.uuid4().hex[:6]}"
    console.print(
        f"Warden demo: workflow [bold]{gateway.spec.spec.name}[/bold] "
        f"(spec {gateway.spec.fingerprint[:12]}), {tickets} tickets, tenant [bold]{tenant}[/bold], "
        f"store {url}",
        highlight=False,
    )
    console.print(f"Approver rule: {approver_mod.RULE}", highlight=False)
    try:
        with fake_models(models_mod.reply) as fake:
            models = ", ".join(f"{n} ({m.model})" for n, m in gateway.spec.spec.models.items())
            console.print(
                f"Models: {models}, answered by a fake upstream on {fake.url} (no network, "
                f"no key), priced as the real ones (genai-prices {data_version()})",
                highlight=False,
            )
            outcomes = asyncio.run(
                _work(gateway, helpdesk, plans, tenant, agent_mod, approver_mod, console, progress)
            )
        gateway.flush()
        summary = _summarize(store, tenant, outcomes, helpdesk.counts())
        summary["tenant"] = tenant
        summary["economics"]["caps"] = {
            b.name: b.usd for b in gateway.spec.spec.budgets if b.usd is not None
        }
    finally:
        gateway.close()
        helpdesk.close()
    _print_summary(console, summary, url)
    return summary


async def _work(
    gateway: Gateway,
    helpdesk: Any,
    plans: list[Any],
    tenant: str,
    agent_mod: ModuleType,
    approver_mod: ModuleType,
    console: Console,
    show: bool,
) -> list[Any]:
    outcomes: list[Any] = []
    pending: list[tuple[str, str]] = []  # (approval id, ticket id)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not show, transient=True) as bar:
        task = bar.add_task("working tickets", total=len(plans))
        waiting: list[Run] = []  # runs with approvals pending: finished after the pass
        for i, plan in enumerate(plans, 1):
            run = gateway.open_run(
                tenant=tenant,
                agent="refund-bot",
                task=f"ticket {plan.ticket_id}",
                task_type="refund_request",
            )
            try:
                outcome = await agent_mod.work_ticket(run, plan.ticket_id, plan.kind)
            except BaseException:
                run.finish("error")
                raise
            outcomes.append(outcome)
            pending.extend((approval_id, plan.ticket_id) for approval_id in outcome.pending)
            # Finishing a run cancels its open approvals: one that waits on a human stays
            # open until the approver's pass has decided (and executed) its actions.
            if outcome.pending:
                waiting.append(run)
            else:
                run.finish("completed")
            if i % BATCH == 0 or i == len(plans):
                await _approver_pass(gateway, helpdesk, pending, approver_mod)
                pending.clear()
                for run in waiting:
                    run.finish("completed")
                waiting.clear()
            bar.advance(task)
    if gateway.svc.models is not None:  # their connections belong to this event loop
        await gateway.svc.models.aclose()
    return outcomes


@contextmanager
def fake_models(script: Any) -> Iterator[FakeUpstream]:
    """The fake model upstream on loopback, answering with ``script``, and the
    environment that points the workflow's models at it (restored after)."""
    with FakeUpstream(script, api_key=FAKE_KEY) as fake:
        values = {
            MODEL_ENV["openai"][0]: fake.openai_url,
            MODEL_ENV["anthropic"][0]: fake.anthropic_url,
            MODEL_ENV["openai"][1]: FAKE_KEY,
            MODEL_ENV["anthropic"][1]: FAKE_KEY,
        }
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield fake
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


async def _approver_pass(
    gateway: Gateway, helpdesk: Any, pending: list[tuple[str, str]], approver_mod: ModuleType
) -> None:
    """The simulated support lead works the queue, then approved actions execute (once)."""
    for approval_id, ticket_id in pending:
        record = gateway.approvals.get(approval_id)
        if record.state != "pending":
            continue
        email = helpdesk.customer_email(ticket_id)
        approve, why = approver_mod.decide(record.tool, record.args, record.evidence, email)
        if approve:
            await gateway.approve(
                approval_id, approver="lead@support.example", roles=["support_lead"], rationale=why
            )
            await gateway.execute_approved(approval_id)
        else:
            await gateway.reject(
                approval_id, approver="lead@support.example", roles=["support_lead"], rationale=why
            )


def _summarize(
    store: Store, tenant: str, outcomes: list[Any], effects: dict[str, int]
) -> dict[str, Any]:
    decisions: Counter[str] = Counter()
    shadow: Counter[str] = Counter()
    for_risk = 0
    terminal: dict[str, Counter[str]] = {"tool": Counter(), "model": Counter()}
    blocks: Counter[str] = Counter()
    failures: dict[str, Counter[str]] = {"tool": Counter(), "model": Counter()}
    approvals: Counter[str] = Counter()
    approval_actions: set[str] = set()
    model_actions: set[str] = set()
    money = Economics()
    events = 0
    for row in iter_events(store, tenant=tenant):
        events += 1
        money.add(row.run_id, row.event)
        match row.event:
            case ev.ActionRequested(action_id=action_id, tool=tool):
                if tool.startswith(MODEL_TOOL_PREFIX):
                    model_actions.add(action_id)
            case ev.DecisionMade(action_id=action_id, effect=effect, rules=rules, shadow=would):
                # The share reviewed is about actions on the world: model calls (all
                # allowed here) are counted in the economics part.
                if action_id in model_actions:
                    continue
                decisions[effect] += 1
                for_risk += REVIEW_RULE in rules
                for entry in would:
                    shadow[f"{entry['rule']} ({entry['effect']})"] += 1
            case ev.Executed(action_id=action_id):
                terminal[_kind(action_id, model_actions)]["executed"] += 1
                if action_id in approval_actions:
                    approvals["executed after approval"] += 1
            case ev.Drafted(action_id=action_id):
                terminal[_kind(action_id, model_actions)]["drafted"] += 1
            case ev.Denied(action_id=action_id, kind=kind, rules=rules):
                terminal[_kind(action_id, model_actions)]["denied"] += 1
                failures[_kind(action_id, model_actions)][kind] += 1
                if kind == "policy_block":
                    for rule in rules:
                        blocks[rule] += 1
            case ev.Failed(action_id=action_id, kind=kind):
                terminal[_kind(action_id, model_actions)]["failed"] += 1
                failures[_kind(action_id, model_actions)][kind] += 1
            case ev.ApprovalRequested(action_id=action_id):
                approvals["requested"] += 1
                approval_actions.add(action_id)
            case ev.ApprovalDecided(decision=decision):
                approvals[decision] += 1
            case ev.ApprovalExpired():
                approvals["expired"] += 1
            case ev.ApprovalEscalated():
                approvals["escalated"] += 1
    report = verify(store, tenant=tenant)
    injection = next(
        (o.run_id for o in outcomes if o.kind == "injection_message"), outcomes[0].run_id
    )
    tool_outcomes = terminal["tool"]
    return {
        "tenant": tenant,
        "tickets": len(outcomes),
        "actions": sum(tool_outcomes.values())
        + approvals["requested"]
        - approvals["executed after approval"]
        - approvals["rejected"],
        "decisions": dict(decisions),
        "review": review_summary(decisions, for_risk),
        "shadow": dict(shadow),
        "outcomes": {kind: dict(counts) for kind, counts in terminal.items()},
        "blocks": dict(blocks),
        "failures": {kind: dict(counts) for kind, counts in failures.items()},
        "approvals": dict(approvals),
        "effects": effects,
        "economics": money.summary(),
        "events": events,
        "verified": report.ok,
        "verify_problem": None if report.ok else str(report.first),
        "explore_run": injection,
    }


def _kind(action_id: str, model_actions: set[str]) -> str:
    return "model" if action_id in model_actions else "tool"


@dataclass
class _ModelSpend:
    calls: int = 0
    cached: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    saved: Decimal = Decimal(0)


@dataclass
class Economics:
    """What the tickets cost, read from their ledger events only: model calls from their
    ``usage`` events, tool costs from ``executed`` events, budget refusals from ``denied``
    events (``budget_exceeded``), success from what each run executed."""

    #: by declared model name (the upstream's model id beside it)
    models: dict[str, _ModelSpend] = field(default_factory=lambda: defaultdict(_ModelSpend))
    model_ids: dict[str, str] = field(default_factory=dict)
    tools: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    tool_calls: Counter[str] = field(default_factory=Counter)
    per_run: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    runs: set[str] = field(default_factory=set)
    finished: dict[str, str] = field(default_factory=dict)
    succeeded: set[str] = field(default_factory=set)
    escalations: int = 0
    budget_blocks: int = 0
    blocked_runs: set[str] = field(default_factory=set)
    #: model calls a budget paid for fewer output tokens than asked (``max_tokens`` capped)
    capped: int = 0
    _tools_of: dict[str, str] = field(default_factory=dict)

    def add(self, run_id: str | None, event: ev.Event) -> None:
        run = run_id or ""
        match event:
            case ev.RunStarted():
                self.runs.add(run)
            case ev.RunFinished(outcome=outcome):
                self.finished[run] = outcome
            case ev.ActionRequested(action_id=action_id, tool=tool):
                self._tools_of[action_id] = tool
            case ev.Executed(action_id=action_id, cost_usd=cost):
                tool = self._tools_of.get(action_id, "")
                if tool in SUCCESS_TOOLS:
                    self.succeeded.add(run)
                if cost is not None:
                    self.tools[tool] += Decimal(cost)
                    self.tool_calls[tool] += 1
                    self.per_run[run] += Decimal(cost)
            case ev.ModelUsage(model=model, route=route, usage=usage, cost_usd=cost):
                spend = self.models[model]
                self.model_ids.setdefault(model, str(route.get("model") or model))
                spend.calls += 1
                if usage is not None:
                    spend.input_tokens += usage.get("input_tokens", 0)
                    spend.output_tokens += usage.get("output_tokens", 0)
                if cost is not None:
                    spend.cost += Decimal(cost)
                    self.per_run[run] += Decimal(cost)
                if event.capped_max_tokens is not None:
                    self.capped += 1
                if event.cached:
                    spend.cached += 1
                    spend.saved += Decimal(event.saved_usd or 0)
                # asked on a route (the agent unsure of the small model's answer) and
                # answered by the large model
                if event.routed is not None and model == "large":
                    self.escalations += 1
            case ev.Denied(kind="budget_exceeded"):
                self.budget_blocks += 1
                self.blocked_runs.add(run)
            case _:
                pass

    def summary(self) -> dict[str, Any]:
        model_total = sum((m.cost for m in self.models.values()), Decimal(0))
        tool_total = sum(self.tools.values(), Decimal(0))
        total = model_total + tool_total
        successful = {r for r in self.succeeded if self.finished.get(r) == "completed"}
        return {
            "models": {
                name: {
                    "model": self.model_ids[name],
                    "calls": m.calls,
                    "cached": m.cached,
                    "input_tokens": m.input_tokens,
                    "output_tokens": m.output_tokens,
                    "cost_usd": m.cost,
                    "saved_usd": m.saved,
                }
                for name, m in sorted(self.models.items())
            },
            "tools": {
                name: {"calls": self.tool_calls[name], "cost_usd": cost}
                for name, cost in sorted(self.tools.items())
            },
            "model_usd": model_total,
            "tool_usd": tool_total,
            "total_usd": total,
            "tickets": len(self.runs),
            "successful": len(successful),
            "per_ticket_usd": total / len(self.runs) if self.runs else None,
            "per_successful_usd": total / len(successful) if successful else None,
            "dearest_run_usd": max(self.per_run.values(), default=Decimal(0)),
            "escalations": self.escalations,
            "budget_blocks": self.budget_blocks,
            "blocked_runs": len(self.blocked_runs),
            "capped": self.capped,
            "cache_hits": sum(m.cached for m in self.models.values()),
            "cache_saved_usd": sum((m.saved for m in self.models.values()), Decimal(0)),
        }


def review_summary(decisions: Counter[str], for_risk: int) -> dict[str, Any]:
    """The share of decisions sent to a human (require_approval or escalate), and how
    many of those only the risk threshold (``risk.review_at``) sent."""
    total = sum(decisions.values())
    reviewed = decisions["require_approval"] + decisions["escalate"]
    return {
        "decisions": total,
        "reviewed": reviewed,
        "for_risk": for_risk,
        "share": reviewed / total if total else 0.0,
    }


def _print_summary(console: Console, s: dict[str, Any], url: str) -> None:
    def table(title: str, data: dict[str, int], key: str) -> Table:
        t = Table(key, "count", title=title, title_justify="left")
        for name, n in sorted(data.items(), key=lambda kv: (-kv[1], kv[0])):
            t.add_row(name, str(n))
        return t

    def split(title: str, data: dict[str, dict[str, int]], key: str) -> Table:
        t = Table(key, "tool calls", "model calls", title=title, title_justify="left")
        tools, models = data["tool"], data["model"]
        names = sorted({*tools, *models}, key=lambda k: (-tools.get(k, 0) - models.get(k, 0), k))
        for name in names:
            t.add_row(name, str(tools.get(name, 0)), str(models.get(name, 0)))
        return t

    console.print(table("Policy decisions on tool calls", s["decisions"], "effect"))
    review = s["review"]
    console.print(
        f"Share reviewed: {review['share']:.1%} ({review['reviewed']} of {review['decisions']} "
        f"decisions went to a human; {review['for_risk']} of them for risk at or above "
        "risk.review_at)",
        highlight=False,
    )
    console.print(table("Shadow rules: would have decided (not enforced)", s["shadow"], "rule"))
    console.print(split("Outcomes of calls", s["outcomes"], "outcome"))
    console.print(table("Blocks by rule", s["blocks"], "rule"))
    console.print(table("Approvals", s["approvals"], "state"))
    console.print(split("Failures and refusals by kind", s["failures"], "kind"))
    console.print(table("Effects in the helpdesk", s["effects"], "table"))
    _print_economics(console, s["economics"])
    if s["verified"]:
        console.print(
            f"[green]ledger verified[/green]: {s['events']} events for tenant {s['tenant']}, chain intact"
        )
    else:
        console.print(f"[red]ledger verification FAILED[/red]: {s['verify_problem']}")
    store_opt = "" if url == default_store_url() else f" --store {url}"
    console.print(
        f"Explore a run:  warden ledger show {s['explore_run']}{store_opt}", highlight=False
    )
    console.print(f"Verify it all:  warden ledger verify{store_opt}", highlight=False)


def _usd(amount: Decimal | None) -> str:
    """Dollars to the cent above $1, to a millionth of a dollar below (a model call
    costs fractions of a cent)."""
    if amount is None:
        return "n/a"
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.6f}"


def _print_economics(console: Console, e: dict[str, Any]) -> None:
    t = Table(title="Spend, from the ledger", title_justify="left")
    t.add_column("spent on", no_wrap=True)
    for column in ("calls", "cached", "in tok", "out tok", "USD"):
        t.add_column(column, justify="right", no_wrap=True)
    for name, m in e["models"].items():
        t.add_row(
            f"{name}: {m['model']}",
            str(m["calls"]),
            str(m["cached"]),
            f"{m['input_tokens']:,}",
            f"{m['output_tokens']:,}",
            _usd(m["cost_usd"]),
        )
    for name, tool in e["tools"].items():
        t.add_row(f"tool {name}", str(tool["calls"]), "", "", "", _usd(tool["cost_usd"]))
    t.add_row("total", "", "", "", "", _usd(e["total_usd"]), style="bold")
    console.print(t)
    caps = ", ".join(f"{name} ${usd} a run" for name, usd in e["caps"].items())
    lines = [
        f"Cost per successful ticket: {_usd(e['per_successful_usd'])} = all spend / "
        f"{e['successful']} successful of {e['tickets']} tickets (success as the task type "
        "declares it: the run completed having executed a refund, a message to the customer "
        f"or an escalation to a human); per ticket worked: {_usd(e['per_ticket_usd'])}",
        f"Escalations to the large model: {e['escalations']} (the small model's confidence "
        "was below 0.7, the agent asked again with it as a hint, the classify route picked "
        "the large model)",
        f"Budget blocks: {e['budget_blocks']} model calls refused (budget_exceeded) in "
        f"{e['blocked_runs']} runs, {e['capped']} capped to what was left; the most a run "
        f"spent: {_usd(e['dearest_run_usd'])} (budget {caps}; a call is refused once what "
        "is left cannot pay for its input)",
        f"Cache hits: {e['cache_hits']} model calls answered from Warden's cache, "
        f"{_usd(e['cache_saved_usd'])} saved",
    ]
    for line in lines:
        console.print(line, highlight=False)


# -- `warden demo --serve`: a console ready for a newcomer ----------------------------------

#: the approval role the queued refunds wait for (the spec's rule for refunds over $100)
QUEUE_ROLE = "support_lead"


@dataclass(frozen=True)
class ConsoleReady:
    """What ``warden demo --serve`` leaves: refunds waiting and a key to decide them."""

    tenant: str
    approvals: list[str]
    approver_key: str


def prepare_console(store_url: str | None, tenant: str, pending: int, *, seed: int) -> ConsoleReady:
    """Put ``pending`` refunds over $100 in ``tenant``'s approval queue for a support lead
    and create a key to work the console with: an admin of that tenant only (so the
    newcomer also sees its dashboards, ledger and switches) that approves as
    ``support_lead``. Each refund is a new ticket in the demo helpdesk (``./.warden/helpdesk.db``, the
    one ``warden serve`` uses) worked as the demo agent works one: read the ticket, look up
    the customer and the order, refund what it asks. Their runs are left open: an approval
    is cancelled when its run finishes. Running it again adds more."""
    directory = example_dir()
    helpdesk_mod = _load("helpdesk", directory)
    path = Path(".warden") / "helpdesk.db"
    if not path.exists():
        helpdesk_mod.seed(path, 200, seed)
    tickets = helpdesk_mod.add_refund_requests(path, pending, seed + len(tenant) + os.getpid())
    helpdesk = helpdesk_mod.Helpdesk(path)
    store = Store(store_url or default_store_url())
    gateway = Gateway.from_spec(directory / "workflow.yaml", tools=helpdesk.tools(), store=store)
    try:
        approvals = asyncio.run(_queue(gateway, tenant, tickets))
        gateway.flush()
        _, key = KeyStore(store).create(
            name=f"newcomer-{uuid.uuid4().hex[:6]}",
            role="admin",
            tenant=tenant,
            created_by="warden demo --serve",
            approval_roles=[QUEUE_ROLE],
        )
    finally:
        gateway.close()
        helpdesk.close()
    return ConsoleReady(tenant, approvals, key)


async def _queue(gateway: Gateway, tenant: str, tickets: list[str]) -> list[str]:
    made: list[str] = []
    for ticket_id in tickets:
        run = gateway.open_run(
            tenant=tenant, agent="refund-bot", task=f"ticket {ticket_id}", task_type="refund_request"
        )

        ticket = await _read(run, "get_ticket", {"ticket_id": ticket_id})
        customer = await _read(run, "lookup_customer", {"customer_id": ticket["customer_id"]})
        order = await _read(run, "lookup_order", {"order_id": ticket["order_id"]})
        answer = await run.call(
            "issue_refund",
            {
                "order_id": order["id"],
                "customer_id": customer["id"],
                "amount": ticket["requested_amount"],
                "payment_method_id": order["payment_method_id"],
                "reason": ticket["subject"],
            },
        )
        if not isinstance(answer, Pending):
            run.finish("error")
            raise WardenError(f"demo --serve: the refund of ticket {ticket_id} did not wait: {answer}")
        run.save()  # left open: finishing the run would cancel its approval
        made.append(answer.approval_id)
    return made


async def _read(run: Run, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    answer = await run.call(tool, args)
    if not isinstance(answer, Allowed):
        run.finish("error")
        raise WardenError(f"demo --serve: {tool} for {run.state.task}: {answer}")
    result: dict[str, Any] = answer.result
    return result


def serve_tools() -> list[Any]:
    """Tool factory for ``warden serve`` with no ``--spec``: the demo helpdesk's tools.

    The helpdesk is seeded once under ./.warden/ and reused by every worker process.
    """
    directory = example_dir()
    helpdesk_mod = _load("helpdesk", directory)
    path = Path(".warden") / "helpdesk.db"
    if not path.exists():
        tmp = path.with_suffix(f".{uuid.uuid4().hex[:6]}.tmp")
        helpdesk_mod.seed(tmp, 200, 7)
        try:
            tmp.rename(path)  # atomic: concurrent workers never see a half-seeded file
        except OSError:
            tmp.unlink(missing_ok=True)
    tools: list[Any] = helpdesk_mod.Helpdesk(path).tools()
    return tools
