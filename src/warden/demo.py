"""``warden demo``: the refund-triage workflow end to end, on the embedded store.

A scripted agent works a stream of helpdesk tickets through the gateway; a simulated
approver (with a stated rule) works the approval queue between batches; the summary is
computed from the ledger itself, which is verified at the end.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import uuid
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from warden import events as ev
from warden.errors import UsageError
from warden.gateway import Gateway, Run
from warden.ledger import iter_events, verify
from warden.policy._engine import REVIEW_RULE
from warden.store import Store, default_store_url

BATCH = 25  # tickets between two passes of the approver


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
        outcomes = asyncio.run(
            _work(gateway, helpdesk, plans, tenant, agent_mod, approver_mod, console, progress)
        )
        gateway.flush()
        summary = _summarize(store, tenant, outcomes, helpdesk.counts())
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
    return outcomes


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
    terminal: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    approvals: Counter[str] = Counter()
    approval_actions: set[str] = set()
    events = 0
    for row in iter_events(store, tenant=tenant):
        events += 1
        match row.event:
            case ev.DecisionMade(effect=effect, rules=rules, shadow=would):
                decisions[effect] += 1
                for_risk += REVIEW_RULE in rules
                for entry in would:
                    shadow[f"{entry['rule']} ({entry['effect']})"] += 1
            case ev.Executed(action_id=action_id):
                terminal["executed"] += 1
                if action_id in approval_actions:
                    approvals["executed after approval"] += 1
            case ev.Drafted():
                terminal["drafted"] += 1
            case ev.Denied(kind=kind, rules=rules):
                terminal["denied"] += 1
                failures[kind] += 1
                if kind == "policy_block":
                    for rule in rules:
                        blocks[rule] += 1
            case ev.Failed(kind=kind):
                terminal["failed"] += 1
                failures[kind] += 1
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
    return {
        "tenant": tenant,
        "tickets": len(outcomes),
        "actions": sum(terminal.values())
        + approvals["requested"]
        - approvals["executed after approval"]
        - approvals["rejected"],
        "decisions": dict(decisions),
        "review": review_summary(decisions, for_risk),
        "shadow": dict(shadow),
        "outcomes": dict(terminal),
        "blocks": dict(blocks),
        "failures": dict(failures),
        "approvals": dict(approvals),
        "effects": effects,
        "events": events,
        "verified": report.ok,
        "verify_problem": None if report.ok else str(report.first),
        "explore_run": injection,
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

    console.print(table("Policy decisions", s["decisions"], "effect"))
    review = s["review"]
    console.print(
        f"Share reviewed: {review['share']:.1%} ({review['reviewed']} of {review['decisions']} "
        f"decisions went to a human; {review['for_risk']} of them for risk at or above "
        "risk.review_at)",
        highlight=False,
    )
    console.print(table("Shadow rules: would have decided (not enforced)", s["shadow"], "rule"))
    console.print(table("Outcomes of calls", s["outcomes"], "outcome"))
    console.print(table("Blocks by rule", s["blocks"], "rule"))
    console.print(table("Approvals", s["approvals"], "state"))
    console.print(table("Failures and refusals by kind", s["failures"], "kind"))
    console.print(table("Effects in the helpdesk", s["effects"], "table"))
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
