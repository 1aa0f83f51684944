"""Warden's own measurements, on the peers' rules and calls.

    python -m benchmarks.bench_warden [--quick] [--json out.json]   # Warden alone
    python -m benchmarks.run_all                                     # Warden + peers

What is timed (every sample is one ``perf_counter_ns`` pair around ONE decision or ONE
governed call, after an untimed warm-up; ``gc`` is collected once and disabled while
sampling, as in ``benchmarks/peers/_timing.py``):

(a) ``bench_policy``: the policy engine alone. One sample = ``Policy.for_tool`` (the
    per-tool rule index) + building the activation dict the way ``PolicyStage`` does +
    ``Policy.decide``. Rules and calls are the peers' (``make_rules`` / ``make_calls``,
    ``to_warden_rule``); before timing, Warden's decision and its matched rules are
    checked against ``reference_decision`` / ``Rule.matches`` for every call. A worst
    case pins ALL N rules to the one tool being called, so the index cannot skip any.
(b) ``bench_governed``: ``await run.call(...)`` end to end, in process, async no-op
    tools, the ledger on a SQLite file in a fresh temporary directory (or PostgreSQL).
    Reads and writes; a write's intent is committed (``synchronous=FULL``) before the
    tool runs. Throughput is calls / wall time of the whole timed loop, including the
    ledger's batched flushes and a final flush of what is still buffered.

Helpers for the report: ``durability_floor`` (raw fsync / SQLite commit / PostgreSQL
commit on the same disk and server), ``stage_breakdown`` (wall-clock µs per call per
pipeline stage, by wrapping the stage objects of one gateway instance; src/ untouched),
``wake_up_penalty`` (a governed read right after an fsync vs. back to back).

``bench_policy`` has the peers' signature, so the peer CLI can also print it:
``python -m benchmarks.peers --peer warden=benchmarks.bench_warden:bench_policy``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import yaml

from warden import Allowed, Gateway
from warden import tool as warden_tool
from warden.errors import SpecError
from warden.policy import Decision, Policy, ProvenanceTracker
from warden.spec import Effect, EffectClass, LoadedSpec, Tier, load_spec_text

from .peers._timing import DEFAULT_WARMUP, percentile, summarize, time_sync
from .peers.ruleset import (
    Rule,
    decision_histogram,
    make_rules,
    matching_rules,
    no_match_indices,
    reference_decision,
    to_warden_rule,
    tool_name,
)

Call = tuple[str, dict[str, Any]]

PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

#: Run caps high enough never to trip during a benchmark (the args vary anyway).
BENCH_LIMITS = {"max_steps": 10_000_000, "max_identical_calls": 1_000_000}

#: Distributions reported in the versions table: Warden's runtime deps, then the peers.
WARDEN_DEPS = (
    "warden",
    "sqlalchemy",
    "pydantic",
    "pydantic-core",
    "pyyaml",
    "lark",
    "typer",
    "rich",
    "jsonschema",
    "fastjsonschema",
    "psycopg",
    "psycopg-binary",
)
PEER_DISTS = (
    "agent-governance-toolkit",
    "agent-governance-toolkit-core",
    "common-expression-language",
)


def dist_versions(names: Sequence[str] = WARDEN_DEPS + PEER_DISTS) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


# --------------------------------------------------------------------------- specs


def spec_yaml(policies: Sequence[dict[str, Any]], tools: dict[str, str]) -> str:
    """A workflow spec: tier ``autonomous`` (writes allowed), every tool declared."""
    doc = {
        "name": "bench",
        "version": "1",
        "owner": "benchmarks",
        "tier": "autonomous",
        "tools": {name: {"effect": effect} for name, effect in tools.items()},
        "policies": list(policies),
        "limits": dict(BENCH_LIMITS),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def load_bench_spec(policies: Sequence[dict[str, Any]], tools: dict[str, str]) -> LoadedSpec:
    return load_spec_text(spec_yaml(policies, tools), "bench.yaml")


def decision_name(effect: Effect) -> str:
    """Warden's effect in the reference's vocabulary (escalate reads as require_approval)."""
    if effect in (Effect.REQUIRE_APPROVAL, Effect.ESCALATE):
        return "require_approval"
    return effect.value


# --------------------------------------------------------------------------- (a) policy


class PolicyHarness:
    """``Policy`` over the peers' rules, plus the activation ``PolicyStage`` would build."""

    def __init__(self, rules: Sequence[Rule], calls: Sequence[Call]) -> None:
        names = sorted({r.tool for r in rules} | {t for t, _ in calls})
        self.loaded = load_bench_spec(
            [to_warden_rule(r) for r in rules], dict.fromkeys(names, "read")
        )
        self.policy = Policy(self.loaded)
        # What Services.tool_contexts holds for a read tool bound from the spec.
        self.tool_ctx = {
            name: {
                "name": name,
                "effect": "read",
                "scope": None,
                "idempotent": True,
                "untrusted_output": False,
            }
            for name in names
        }
        self.principal = {"agent": "bench-agent", "scopes": [], "key": None}
        self.counts: dict[str, int] = {}
        self.provenance = ProvenanceTracker()  # nothing untrusted seen: tag() is constant
        self.step = 0

    def activation(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        self.step += 1
        return {
            "tool": self.tool_ctx[tool],
            "args": args,
            "principal": self.principal,
            "tenant": "bench",
            "run": {
                "id": "run_bench",
                "step": self.step,
                "tier": "autonomous",
                "task_type": None,
                "counts": self.counts,
                "end_user": None,
                "opened_by": None,
                "risk": 0.0,
            },
            "provenance": self.provenance.tag(args),
            "window": {},
            "facts": {},
        }

    def decide(self, tool: str, args: dict[str, Any]) -> Decision:
        """One decision as the pipeline's policy stage makes it (no facts, no windows)."""
        policy = self.policy
        return policy.decide(
            policy.for_tool(tool), EffectClass.READ, Tier.AUTONOMOUS, self.activation(tool, args)
        )

    def check(self, rules: Sequence[Rule], calls: Sequence[Call]) -> None:
        """Decision and matched rules equal the plain-Python reference, for every call."""
        for tool, args in calls:
            snapshot = dict(args)
            decision = self.decide(tool, args)
            want = reference_decision(rules, tool, args)
            got = decision_name(decision.effect)
            assert got == want, f"Warden decided {got!r}, reference {want!r} for {tool} {args}"
            want_matched = {r.name for r in matching_rules(rules, tool, args)}
            assert set(decision.matched) == want_matched, (
                f"Warden matched {sorted(decision.matched)}, reference {sorted(want_matched)} "
                f"for {tool} {args}"
            )
            assert args == snapshot, "Warden mutated the call's args"


def pinned_to_one_tool(
    rules: Sequence[Rule], calls: Sequence[Call]
) -> tuple[list[Rule], list[Call]]:
    """The worst case for the index: every rule and every call on the same tool."""
    target = calls[0][0]
    return (
        [dataclasses.replace(r, tool=target) for r in rules],
        [(target, args) for _, args in calls],
    )


def bench_policy(
    rules: Sequence[Rule],
    calls: Sequence[Call],
    repeat: int = 20_000,
    warmup: int = DEFAULT_WARMUP,
) -> dict[str, Any]:
    """Warden's policy engine on the peers' rules; same call signature as the peers."""
    calls = list(calls)
    n_rules = len(rules)
    n = len(calls)
    harness = PolicyHarness(rules, calls)
    harness.check(rules, calls)
    no_match = no_match_indices(rules, calls)
    per_call_rules = [len(harness.policy.for_tool(t).rules) for t, _ in calls]

    worst_rules, worst_calls = pinned_to_one_tool(rules, calls)
    worst = PolicyHarness(worst_rules, worst_calls)
    worst.check(worst_rules, worst_calls)
    worst_no_match = no_match_indices(worst_rules, worst_calls)
    assert all(len(worst.policy.for_tool(t).rules) == n_rules for t, _ in worst_calls)

    results: dict[str, Any] = {}
    results["policy_eval"] = {
        "what": "Policy.for_tool + activation dict (as PolicyStage) + Policy.decide",
        "checked": True,
        "rules_evaluated_mean": statistics.fmean(per_call_rules),
        **summarize(time_sync(harness.decide, calls, repeat, warmup), n, no_match),
    }

    policy = harness.policy
    prebuilt = [(policy.for_tool(t), harness.activation(t, a)) for t, a in calls]

    def decide_only(tp: Any, activation: dict[str, Any]) -> Decision:
        return policy.decide(tp, EffectClass.READ, Tier.AUTONOMOUS, activation)

    results["decide_only"] = {
        "what": "Policy.decide alone, rule list and activation pre-built",
        "checked": True,
        **summarize(time_sync(decide_only, prebuilt, repeat, warmup), n, no_match),
    }
    worst_res = summarize(time_sync(worst.decide, worst_calls, repeat, warmup), n, worst_no_match)
    results["worst_case"] = {
        "what": f"all {n_rules} rules pinned to the called tool (the index skips nothing)",
        "checked": True,
        "rules_evaluated_mean": float(n_rules),
        **worst_res,
    }
    per = max(n_rules, 1)
    results["worst_case_per_rule"] = {
        "what": "worst_case / number of rules",
        "checked": True,
        "median_us": worst_res["median_us"] / per,
        "p99_us": worst_res["p99_us"] / per,
        "mean_us": worst_res["mean_us"] / per,
        "samples": worst_res["samples"],
        "median_us_no_match": (
            worst_res["median_us_no_match"] / per
            if worst_res["median_us_no_match"] is not None
            else None
        ),
        "samples_no_match": worst_res["samples_no_match"],
    }
    try:
        results.update(bench_rules_v2(repeat, warmup))
    except SpecError as exc:  # a tree from before variables / chained facts (compare --before)
        print(f"rules v2 rows skipped: this Warden cannot load them ({exc})", file=sys.stderr)
    return {
        "peer": "warden",
        "n_rules": n_rules,
        "n_calls": n,
        "repeat": repeat,
        "warmup": warmup,
        "decisions": decision_histogram(rules, calls),
        "worst_case_decisions": decision_histogram(worst_rules, worst_calls),
        "versions": dist_versions(("warden",)),
        "results": results,
    }


V2_SPEC = """
name: bench_v2
version: "1"
owner: benchmarks
tier: autonomous
tools:
  get_order: {effect: read}
  get_customer: {effect: read}
  pay: {effect: money}
facts:
  order: {tool: get_order, args: {order_id: args.order_id}}
  customer: {tool: get_customer, args: {customer_id: facts.order.customer_id}}
policies:
  - name: basket_total_over_1000
    when: tool.name == "pay" && sum(args.items.map(i, i.amount)) > 1000.0
    effect: require_approval
    reason: baskets over 1000 need a human
  - name: vip_only_over_100
    when: tool.name == "pay" && args.amount > 100.0 && facts.customer.tier != "vip"
    effect: deny
    reason: only VIPs pay over 100
  - {name: pay_alone, when: 'tool.name == "pay"', effect: allow, reason: threshold}
"""


def bench_rules_v2(repeat: int, warmup: int) -> dict[str, Any]:
    """Rows for the newer rule features, on one ``pay`` tool with three rules.

    ``sum_20_items``: a rule summing a 20-item list (``sum(args.items.map(...))``),
    activation pre-built as in ``decide_only``. ``chained_fact``: computing the arguments
    of two chained facts in dependency order (``customer`` from ``facts.order``) as the
    policy stage does between its look-ups (the look-ups themselves are tool calls, not
    timed), then ``Policy.decide`` with a rule reading the second fact.
    """
    policy = Policy(load_spec_text(V2_SPEC, "bench_v2.yaml"))
    tp = policy.for_tool("pay")
    items = [{"sku": f"s{i}", "amount": 10.0 + i} for i in range(20)]
    base = {
        "tool": {"name": "pay", "effect": "money"},
        "principal": {"agent": "bench-agent", "scopes": [], "key": None},
        "tenant": "bench",
        "run": {
            "id": "run_bench",
            "step": 1,
            "tier": "autonomous",
            "task_type": None,
            "counts": {},
            "end_user": None,
            "opened_by": None,
            "risk": 0.0,
        },
        "provenance": {},
        "window": {},
    }
    sum_activation = {
        **base,
        "args": {"order_id": "o1", "amount": 50.0, "items": items},
        "facts": {"order": {"customer_id": "c1"}, "customer": {"tier": "vip"}},
    }
    decision = policy.decide(tp, EffectClass.MONEY, Tier.AUTONOMOUS, sum_activation)
    assert decision.effect is Effect.ALLOW and "basket_total_over_1000" not in decision.matched
    big = {**sum_activation, "args": {**sum_activation["args"], "items": items * 4}}
    assert policy.decide(tp, EffectClass.MONEY, Tier.AUTONOMOUS, big).rules == (
        "basket_total_over_1000",
    )

    def sum_row(tool_policy: Any, activation: dict[str, Any]) -> Decision:
        return policy.decide(tool_policy, EffectClass.MONEY, Tier.AUTONOMOUS, activation)

    looked_up = {"order": {"customer_id": "c1"}, "customer": {"tier": "basic"}}
    order = [n for n in policy.fact_order if n in tp.facts]
    assert order == ["order", "customer"]

    sent: dict[str, dict[str, Any]] = {}

    def chained(tool: str, args: dict[str, Any]) -> Decision:
        facts: dict[str, Any] = {}
        activation = {**base, "args": args, "facts": facts}
        for name in order:
            sent[name] = {k: e.evaluate(activation) for k, e in policy.fact_args[name].items()}
            facts[name] = looked_up[name]
        return policy.decide(policy.for_tool(tool), EffectClass.MONEY, Tier.AUTONOMOUS, activation)

    chained_args = {"order_id": "o1", "amount": 150.0, "items": items[:2]}
    assert chained("pay", chained_args).rules == ("vip_only_over_100",)
    assert sent == {"order": {"order_id": "o1"}, "customer": {"customer_id": "c1"}}
    return {
        "sum_20_items": {
            "what": "Policy.decide, a rule summing a 20-item list (3 rules on the tool)",
            "checked": True,
            **summarize(time_sync(sum_row, [(tp, sum_activation)], repeat, warmup), 1, []),
        },
        "chained_fact": {
            "what": "two chained facts' arguments in order + Policy.decide on the second",
            "checked": True,
            **summarize(time_sync(chained, [("pay", chained_args)], repeat, warmup), 1, []),
        },
    }


# --------------------------------------------------------------------------- (b) governed


@warden_tool
async def noop(x: int) -> int:
    """Async no-op read tool."""
    return x


@warden_tool(effect="write")
async def noop_write(x: int) -> int:
    """Async no-op write tool."""
    return x


async def _peer_tool(amount: float, currency: str, recipient: str, count: int) -> dict[str, Any]:
    return {}


def own_rules(tool_name: str) -> list[dict[str, Any]]:
    """Three realistic rules on the called tool; none matches the benchmark's calls."""
    return [
        {
            "name": f"{tool_name}_negative_id",
            "when": f'tool.name == "{tool_name}" && args.x < 0',
            "effect": "deny",
            "reason": "ids are never negative",
        },
        {
            "name": f"{tool_name}_bulk",
            "when": f'tool.name == "{tool_name}" && args.x > 1000000000',
            "effect": "require_approval",
            "reason": "bulk ranges need a human",
        },
        {
            "name": f"{tool_name}_blocked_agent",
            "when": f'tool.name == "{tool_name}" && principal.agent == "quarantined-agent"',
            "effect": "deny",
            "reason": "this agent is quarantined",
        },
    ]


def governed_gateway(n_rules: int, store: str) -> Gateway:
    """A gateway over the 20 peer tools + ``noop`` + ``noop_write`` with ``n_rules`` rules:
    ``n_rules - 6`` peer rules (on the other tools) and 3 on each no-op tool."""
    own = own_rules("noop") + own_rules("noop_write")
    peer = make_rules(max(n_rules - len(own), 0))
    tools = {tool_name(i): "read" for i in range(20)}
    tools.update(noop="read", noop_write="write")
    loaded = load_bench_spec([to_warden_rule(r) for r in peer] + own, tools)
    assert len(loaded.spec.policies) == n_rules
    impls: dict[str, Callable[..., Any]] = dict.fromkeys(tools, _peer_tool)
    impls.update(noop=noop, noop_write=noop_write)
    return Gateway(loaded, impls, store=store)


async def _governed_loop(gw: Gateway, tool_name: str, repeat: int, warmup: int) -> dict[str, Any]:
    async with gw.run(tenant="bench", agent="bench-agent", task=f"bench {tool_name}") as run:
        x = 0
        for _ in range(warmup):
            x += 1
            res = await run.call(tool_name, {"x": x})
            if not (isinstance(res, Allowed) and res.result == x):
                raise AssertionError(f"warm-up call {x} of {tool_name} gave {res!r}")
        gw.flush()
        samples = [0] * repeat
        bad: list[Any] = []
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            loop_start = perf_counter_ns()
            for k in range(repeat):
                x += 1
                args = {"x": x}
                t0 = perf_counter_ns()
                res = await run.call(tool_name, args)
                samples[k] = perf_counter_ns() - t0
                if not isinstance(res, Allowed) or res.result != x:
                    bad.append(res)
            flush_start = perf_counter_ns()
            gw.flush()  # what is still buffered belongs to these calls
            loop_end = perf_counter_ns()
        finally:
            if was_enabled:
                gc.enable()
        if bad:
            raise AssertionError(f"{len(bad)} governed calls were not Allowed, first: {bad[0]!r}")
    ordered = sorted(samples)
    wall_s = (loop_end - loop_start) / 1e9
    return {
        "median_us": statistics.median(ordered) / 1000.0,
        "p99_us": percentile(ordered, 99.0) / 1000.0,
        "p999_us": percentile(ordered, 99.9) / 1000.0,
        "max_us": ordered[-1] / 1000.0,
        "mean_us": statistics.fmean(ordered) / 1000.0,
        "samples": repeat,
        "calls_per_s": repeat / wall_s,
        "wall_s": wall_s,
        "final_flush_us": (loop_end - flush_start) / 1000.0,
    }


def run_governed(
    store_url: str, n_rules: int, kind: str, repeat: int, warmup: int
) -> dict[str, Any]:
    """One series of governed calls on a fresh gateway; the ledger is verified after."""
    tool_name = {"read": "noop", "write": "noop_write"}[kind]
    gw = governed_gateway(n_rules, store_url)
    try:
        out = asyncio.run(_governed_loop(gw, tool_name, repeat, warmup))
        report = gw.verify_ledger()
        if not report.ok:
            raise AssertionError(f"ledger does not verify after the benchmark: {report.first}")
        out["ledger_events"] = report.events
        out["rules_on_called_tool"] = len(gw.svc.policy.for_tool(tool_name).rules)
    finally:
        gw.close()
    out.update(kind=kind, n_rules=n_rules, tool=tool_name)
    return out


@contextmanager
def sqlite_store() -> Iterator[str]:
    """A SQLite file in a fresh temporary directory, removed afterwards."""
    tmp = tempfile.mkdtemp(prefix="warden-bench-")
    try:
        yield f"sqlite:///{tmp}/warden.db"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def postgres_reachable(url: str) -> str | None:
    """None if ``url`` answers, else why not."""
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # any driver/network error means "skip PostgreSQL"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


@contextmanager
def postgres_store(admin_url: str) -> Iterator[str]:
    """A throwaway database on the server of ``admin_url``, dropped afterwards."""
    from sqlalchemy import create_engine, make_url, text

    name = f"warden_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def postgres_server_version(url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


def bench_governed(
    rule_counts: Sequence[int] = (20, 100),
    *,
    read_repeat: int = 20_000,
    write_repeat: int = 3_000,
    warmup: int = 500,
    pg_url: str | None = PG_URL_DEFAULT,
    pg_read_repeat: int = 10_000,
    pg_write_repeat: int = 3_000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Governed read and write calls on SQLite, and on PostgreSQL if it answers."""
    rows: list[dict[str, Any]] = []
    for n in rule_counts:
        for kind, repeat in (("read", read_repeat), ("write", write_repeat)):
            with sqlite_store() as url:
                log(f"  governed {kind}, {n} rules, SQLite ({repeat} calls)")
                rows.append({"store": "sqlite", **run_governed(url, n, kind, repeat, warmup)})
    pg: dict[str, Any] = {"url": pg_url, "skipped": None}
    if pg_url is None:
        pg["skipped"] = "disabled (--no-postgres)"
    else:
        why = postgres_reachable(pg_url)
        if why is not None:
            pg["skipped"] = f"PostgreSQL at {pg_url} did not answer ({why})"
        else:
            pg["server_version"] = postgres_server_version(pg_url)
            for n in rule_counts:
                for kind, repeat in (("read", pg_read_repeat), ("write", pg_write_repeat)):
                    with postgres_store(pg_url) as url:
                        log(f"  governed {kind}, {n} rules, PostgreSQL ({repeat} calls)")
                        rows.append(
                            {"store": "postgresql", **run_governed(url, n, kind, repeat, warmup)}
                        )
    if pg["skipped"]:
        log(f"  PostgreSQL skipped: {pg['skipped']}")
    return {"rows": rows, "postgres": pg, "warmup": warmup}


# --------------------------------------------------------------------------- calibration


def _median_us(samples: Sequence[int]) -> float:
    return statistics.median(samples) / 1000.0


def durability_floor(pg_url: str | None = PG_URL_DEFAULT, repeat: int = 300) -> dict[str, Any]:
    """What one durable commit costs on this disk / server, without Warden."""
    out: dict[str, Any] = {}
    tmp = tempfile.mkdtemp(prefix="warden-bench-floor-")
    try:
        path = os.path.join(tmp, "fsync.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            samples = []
            for _ in range(repeat):
                os.write(fd, b"x" * 4096)
                t0 = perf_counter_ns()
                os.fsync(fd)
                samples.append(perf_counter_ns() - t0)
        finally:
            os.close(fd)
        out["fsync_4k_us"] = _median_us(samples)
        db = sqlite3.connect(os.path.join(tmp, "floor.db"), isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
            samples = []
            for i in range(repeat):
                t0 = perf_counter_ns()
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 200))
                db.execute("COMMIT")
                samples.append(perf_counter_ns() - t0)
        finally:
            db.close()
        out["sqlite_commit_us"] = _median_us(samples)
        out["filesystem"] = _filesystem_of(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if pg_url is not None and postgres_reachable(pg_url) is None:
        try:
            import psycopg
            from sqlalchemy import make_url

            u = make_url(pg_url)
            conninfo = (
                f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"
                + (f" password={u.password}" if u.password else "")
            )
            with psycopg.connect(conninfo) as conn:
                conn.execute("CREATE TEMP TABLE floor_t (k int primary key, v text)")
                conn.commit()
                samples = []
                for i in range(repeat):
                    t0 = perf_counter_ns()
                    conn.execute("INSERT INTO floor_t VALUES (%s, %s)", (i, "x" * 200))
                    conn.commit()
                    samples.append(perf_counter_ns() - t0)
                out["pg_insert_commit_us"] = _median_us(samples)
                out["pg_synchronous_commit"] = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
                out["pg_fsync"] = conn.execute("SHOW fsync").fetchone()[0]  # type: ignore[index]
        except Exception as exc:  # calibration only: never fail the run for it
            out["pg_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _filesystem_of(path: str) -> str:
    """``/dev/x ext4`` for the mount holding ``path`` (Linux), else ``unknown``."""
    try:
        best = ("", "unknown")
        real = os.path.realpath(path)
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                dev, mnt, fstype, *_ = line.split()
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
                    best[0]
                ):
                    best = (mnt, f"{dev} {fstype} (mounted at {mnt})")
        return best[1]
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- breakdown


class _Timed:
    """Wraps a callable (an old-style stage, a bound method) and records its wall-clock
    time per call, including whatever it calls."""

    def __init__(self, name: str, inner: Callable[..., Any], is_async: bool) -> None:
        self.name = name
        self.inner = inner
        self.is_async = is_async
        self.samples: list[int] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return self._acall(*args, **kwargs)
        t0 = perf_counter_ns()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.samples.append(perf_counter_ns() - t0)

    async def _acall(self, *args: Any, **kwargs: Any) -> Any:
        t0 = perf_counter_ns()
        try:
            coro: Awaitable[Any] = self.inner(*args, **kwargs)
            return await coro
        finally:
            self.samples.append(perf_counter_ns() - t0)

    def row(self, n_calls: int) -> dict[str, Any]:
        """Mean µs per governed call (incl. amortised flushes) and median µs per entry."""
        return {
            "part": self.name,
            "us_per_call": sum(self.samples) / n_calls / 1000.0,
            "median_us": statistics.median(self.samples) / 1000.0 if self.samples else 0.0,
            "entries_per_call": len(self.samples) / n_calls,
        }


class _TimedStage(_Timed):
    """Wraps a wrapping stage (``async (call, next) -> Result``) and records its time
    EXCLUSIVE of the stages inside it: the time spent awaiting ``next`` is subtracted, so
    the rows add up to the pipeline instead of counting the innermost stage 14 times."""

    def __init__(self, name: str, inner: Callable[..., Any]) -> None:
        super().__init__(name, inner, True)

    async def __call__(self, call: Any, next: Callable[[Any], Awaitable[Any]]) -> Any:
        inside = 0

        async def timed_next(c: Any) -> Any:
            nonlocal inside
            t = perf_counter_ns()
            try:
                return await next(c)
            finally:
                inside += perf_counter_ns() - t

        t0 = perf_counter_ns()
        try:
            return await self.inner(call, timed_next)
        finally:
            self.samples.append(perf_counter_ns() - t0 - inside)


def _wrap_stages(pipe: Any) -> tuple[list[_Timed], str]:
    """Wrap every stage of ``pipe`` with a timer; returns the timers and which kernel.

    The kernel since the rewrite chains wrapping stages (``Pipeline.stages``, built into
    ``Pipeline._entry`` by ``chain``); the one before it ran two flat lists
    (``Pipeline.decide`` / ``Pipeline.act``) and a central ``finish``. Both are supported
    so one harness measures the code before and after the rewrite."""
    timers: list[_Timed] = []
    if hasattr(pipe, "decide") and hasattr(pipe, "act"):
        for attr in ("decide", "act"):
            wrapped = []
            for stage in getattr(pipe, attr):
                t = _Timed(type(stage).__name__, stage, True)
                timers.append(t)
                wrapped.append(t)
            setattr(pipe, attr, wrapped)
        finish = _Timed("Pipeline.finish", pipe.finish, False)
        pipe.finish = finish
        timers.append(finish)
        return timers, "flat lists (decide / act / finish)"
    from warden.pipeline._pipeline import chain  # only in the wrapping-stage kernel

    stages = [_TimedStage(type(stage).__name__, stage) for stage in pipe.stages]
    timers.extend(stages)
    pipe._entry = chain(stages)
    return timers, "wrapping stages, each exclusive of the stages inside it"


def stage_breakdown(
    kind: str,
    n_rules: int = 100,
    repeat: int = 3_000,
    warmup: int = 300,
    pg_url: str | None = None,
) -> dict[str, Any]:
    """Wall-clock time per pipeline stage of governed calls (SQLite, or PostgreSQL).

    The stage objects of ONE gateway instance are wrapped (see ``_wrap_stages``), and so
    are the ledger's batch write and the dialect's commit; nothing in src/ is modified.
    Each wrapper adds ~0.3 µs (~0.6 µs for a wrapping stage, whose ``next`` is timed
    too). ``us_per_call`` is the mean over all calls, so a batched ledger write in the
    caller's thread is charged, amortised, to the stage whose event triggered it;
    ``median_us`` is the typical single entry.
    """
    tool_name = {"read": "noop", "write": "noop_write"}[kind]
    store_cm = sqlite_store() if pg_url is None else postgres_store(pg_url)
    with store_cm as url:
        gw = governed_gateway(n_rules, url)
        try:
            timers, shape = _wrap_stages(gw.pipeline)
            ledger = gw.svc.ledger
            write_buffer = _Timed(
                "(ledger) LedgerWriter._write_buffer: chain + INSERT, any thread",
                ledger._write_buffer,
                False,
            )
            ledger._write_buffer = write_buffer  # type: ignore[method-assign]
            dialect = gw.store.engine.dialect
            commit = _Timed("(ledger and store) DBAPI commit, any thread", dialect.do_commit, False)
            dialect.do_commit = commit  # type: ignore[method-assign]
            every = [*timers, write_buffer, commit]
            whole: list[int] = [0] * repeat

            async def body() -> None:
                async with gw.run(tenant="bench", agent="bench-agent", task="breakdown") as run:
                    x = 0
                    for _ in range(warmup):
                        x += 1
                        await run.call(tool_name, {"x": x})
                    gw.flush()
                    for t in every:
                        t.samples.clear()
                    gc.collect()
                    gc.disable()
                    try:
                        for k in range(repeat):
                            x += 1
                            t0 = perf_counter_ns()
                            await run.call(tool_name, {"x": x})
                            whole[k] = perf_counter_ns() - t0
                    finally:
                        gc.enable()

            asyncio.run(body())
        finally:
            gw.close()
    rows = [t.row(repeat) for t in timers]
    mean_whole = sum(whole) / repeat / 1000.0
    rows.append(
        {
            "part": "rest: Run.call, Call(), stage dispatch (old kernel: action_requested too)",
            "us_per_call": mean_whole - sum(r["us_per_call"] for r in rows),
            "median_us": None,
            "entries_per_call": 1.0,
        }
    )
    rows.append(write_buffer.row(repeat))
    rows.append(commit.row(repeat))
    return {
        "store": "sqlite" if pg_url is None else "postgresql",
        "kind": kind,
        "tool": tool_name,
        "n_rules": n_rules,
        "samples": repeat,
        "kernel": shape,
        "mean_us": mean_whole,
        "median_us": statistics.median(whole) / 1000.0,
        "rows": rows,
    }


def wake_up_penalty(n_rules: int = 100, repeat: int = 2_000, warmup: int = 300) -> dict[str, Any]:
    """Governed reads back to back vs. each one right after an (untimed) fsync.

    On a virtual machine the CPU idles while a thread waits for the disk, and the code
    that runs next is slower (cold caches, vCPU rescheduled). A governed write waits on
    fsync mid-call, so its CPU-bound stages pay this too; this row measures it on the
    same read path, so the write breakdown can be read fairly.
    """
    out: dict[str, Any] = {}
    with sqlite_store() as url:
        gw = governed_gateway(n_rules, url)
        scratch = url.removeprefix("sqlite:///") + ".scratch"
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT, 0o600)
        try:

            async def body() -> None:
                async with gw.run(tenant="bench", agent="bench-agent", task="wake-up") as run:
                    x = 0
                    for _ in range(warmup):
                        x += 1
                        await run.call("noop", {"x": x})
                    for mode in ("back_to_back", "after_fsync"):
                        samples = [0] * repeat
                        gc.collect()
                        gc.disable()
                        try:
                            for k in range(repeat):
                                x += 1
                                if mode == "after_fsync":
                                    os.write(fd, b"x" * 4096)
                                    os.fsync(fd)
                                t0 = perf_counter_ns()
                                await run.call("noop", {"x": x})
                                samples[k] = perf_counter_ns() - t0
                        finally:
                            gc.enable()
                        out[f"{mode}_median_us"] = _median_us(samples)

            asyncio.run(body())
        finally:
            os.close(fd)
            gw.close()
    out["penalty_us"] = out["after_fsync_median_us"] - out["back_to_back_median_us"]
    return out


# --------------------------------------------------------------------------- CLI


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.2f}" if x < 10 else f"{x:,.1f}"


def main(argv: list[str] | None = None) -> int:
    from .peers.ruleset import make_calls

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="few samples, for a smoke test")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--pg-url", default=os.environ.get("WARDEN_BENCH_PG_URL", PG_URL_DEFAULT))
    p.add_argument("--json", dest="json_out")
    ns = p.parse_args(argv)
    repeat, warmup = (2_000, 200) if ns.quick else (20_000, DEFAULT_WARMUP)
    calls = make_calls()
    out: dict[str, Any] = {"policy": {}, "versions": dist_versions()}
    print("policy evaluation (µs per decision)")
    for n in (20, 100):
        res = bench_policy(make_rules(n), calls, repeat, warmup)
        out["policy"][n] = res
        for key, r in res["results"].items():
            print(
                f"  {n:>4} rules  {key:<22} median {_fmt(r['median_us']):>8}  "
                f"p99 {_fmt(r['p99_us']):>8}  no-match {_fmt(r['median_us_no_match']):>8}"
            )
    print("governed calls (µs per call)")
    out["governed"] = bench_governed(
        read_repeat=2_000 if ns.quick else 20_000,
        write_repeat=300 if ns.quick else 3_000,
        warmup=100 if ns.quick else 500,
        pg_url=None if ns.no_postgres else ns.pg_url,
        pg_read_repeat=1_000 if ns.quick else 10_000,
        pg_write_repeat=300 if ns.quick else 3_000,
        log=lambda s: print(s, file=sys.stderr),
    )
    for row in out["governed"]["rows"]:
        print(
            f"  {row['store']:<10} {row['kind']:<5} {row['n_rules']:>4} rules  "
            f"median {_fmt(row['median_us']):>8}  p99 {_fmt(row['p99_us']):>8}  "
            f"{row['calls_per_s']:>9,.0f} calls/s"
        )
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
