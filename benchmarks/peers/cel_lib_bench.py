"""The ``common-expression-language`` package (import name ``cel``) on the shared rule set.

The library wraps the Rust ``cel`` crate.  Its documented fast path is
"compile once, execute many": ``cel.compile(src) -> Program`` and
``Program.execute(context)``.  ``context`` may be a plain ``dict`` or a
``cel.Context``; a ``dict`` is converted to CEL values on EVERY ``execute``, a
``Context`` once when it is built.  Measured here, 100 executes against one
``Context`` cost ~30x less than 100 executes against the dict, so the main
measurement builds one ``Context`` per call (inside the timed region) and runs the
100 compiled programs against it, one after another, with no early exit.

Each rule's condition is :func:`ruleset.to_cel`, e.g.
``tool.name == "issue_refund" && args.amount > 250``, against the context
``{"tool": {"name": ...}, "args": {...}}``.  The decision (most restrictive
matching effect, else allow) is folded in Python after each ``execute``.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from ._timing import DEFAULT_WARMUP, summarize, time_sync
from .ruleset import (
    EFFECT_RANK,
    RANK_EFFECT,
    Rule,
    decision_histogram,
    no_match_indices,
    reference_decision,
    to_cel,
)

Call = tuple[str, dict[str, Any]]


class CELNotInstalledError(ImportError):
    """The ``common-expression-language`` package is not importable."""


def _import_cel() -> Any:
    try:
        import cel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CELNotInstalledError(
            "The CEL library is not installed (module 'cel' not found). Install it with:\n"
            "    pip install common-expression-language"
        ) from exc
    if not hasattr(cel, "compile") or not hasattr(cel, "Context"):
        raise CELNotInstalledError(
            "module 'cel' has no compile()/Context: this is not the "
            "common-expression-language package (>= 0.5) this benchmark expects"
        )
    return cel


def cel_versions() -> dict[str, str]:
    try:
        v = metadata.version("common-expression-language")
    except metadata.PackageNotFoundError:
        v = "not installed"
    return {"common-expression-language": v, "python": platform.python_version()}


def cel_context(tool: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"tool": {"name": tool}, "args": args}


def bench_cel_lib(
    rules: Sequence[Rule],
    calls: Sequence[Call],
    repeat: int = 20_000,
    warmup: int = DEFAULT_WARMUP,
    dict_context_repeat: int | None = None,
) -> dict[str, Any]:
    """Time the CEL library on ``rules`` x ``calls``; timings are µs.

    Returned ``results`` keys:

    ``full_ruleset``
        One call: build a ``cel.Context`` and execute all N compiled programs
        one after another (no short-circuit across rules), fold the decision.
    ``per_condition``
        ``full_ruleset`` divided by N (amortises the ``Context`` build).
    ``single_execute``
        Separately timed single ``Program.execute(ctx)`` against a pre-built
        ``Context`` (cycling over rules and calls); includes ~timer overhead.
    ``context_build``
        ``cel.Context(variables=...)`` alone -- the per-call conversion of the
        context into CEL values, included in ``full_ruleset``.
    ``one_program_list``
        All N conditions compiled into ONE program ``[c1, c2, ...]`` -- one
        Python->Rust crossing per call; a list literal evaluates every element.
        Not what the brief asks for ("one after another"), shown as the
        fastest way the library allows.
    ``dict_context``
        As ``full_ruleset`` but passing the plain dict to each ``execute``
        (what the README's first examples do); fewer samples since it is slow.
    """
    cel = _import_cel()
    if not calls:
        raise ValueError("need at least one call")
    calls = list(calls)
    n_rules = len(rules)
    expected = [reference_decision(rules, t, a) for t, a in calls]
    no_match = no_match_indices(rules, calls)

    Context = cel.Context
    compiled = [(cel.compile(to_cel(r)), EFFECT_RANK[r.effect]) for r in rules]
    combined = cel.compile("[" + ", ".join(to_cel(r) for r in rules) + "]") if rules else None
    ranks = [EFFECT_RANK[r.effect] for r in rules]

    def full_ruleset(tool: str, args: dict[str, Any]) -> str:
        ctx = Context(variables={"tool": {"name": tool}, "args": args})
        best = 0
        for program, rank in compiled:
            if program.execute(ctx) is True and rank > best:
                best = rank
        return RANK_EFFECT[best]

    def dict_context(tool: str, args: dict[str, Any]) -> str:
        ctx = {"tool": {"name": tool}, "args": args}
        best = 0
        for program, rank in compiled:
            if program.execute(ctx) is True and rank > best:
                best = rank
        return RANK_EFFECT[best]

    def one_program_list(tool: str, args: dict[str, Any]) -> str:
        if combined is None:
            return "allow"
        ctx = Context(variables={"tool": {"name": tool}, "args": args})
        best = 0
        for matched, rank in zip(combined.execute(ctx), ranks, strict=True):
            if matched is True and rank > best:
                best = rank
        return RANK_EFFECT[best]

    # ---- correctness cross-check (untimed) ----
    for i, (tool, args) in enumerate(calls):
        for fn in (full_ruleset, dict_context, one_program_list):
            got = fn(tool, args)
            assert got == expected[i], (
                f"CEL ({fn.__name__}) decided {got!r}, reference {expected[i]!r} for {tool} {args}"
            )
        # Each condition individually, too: CEL's truth must equal the rule's.
        ctx = Context(variables=cel_context(tool, args))
        for rule, (program, _) in zip(rules, compiled, strict=True):
            assert program.execute(ctx) is rule.matches(tool, args), (
                f"CEL condition {to_cel(rule)!r} disagrees with Python for {tool} {args}"
            )

    n = len(calls)
    results: dict[str, Any] = {}
    full = summarize(time_sync(full_ruleset, calls, repeat, warmup), n, no_match)
    results["full_ruleset"] = {
        "what": f"cel.Context per call + {n_rules} compiled Program.execute, one after another",
        "checked": True,
        **full,
    }
    per = max(n_rules, 1)
    results["per_condition"] = {
        "what": "full_ruleset / number of rules",
        "checked": True,
        "median_us": full["median_us"] / per,
        "p99_us": full["p99_us"] / per,
        "mean_us": full["mean_us"] / per,
        "samples": full["samples"],
        "median_us_no_match": (
            full["median_us_no_match"] / per if full["median_us_no_match"] is not None else None
        ),
        "samples_no_match": full["samples_no_match"],
    }

    if rules:
        # Single execute against pre-built Contexts: pair (call, rule) round-robin.
        pairs: list[tuple[Any, Any]] = []
        ctxs = [Context(variables=cel_context(t, a)) for t, a in calls]
        for k in range(max(len(calls), n_rules) * 2):
            pairs.append((compiled[k % n_rules][0], ctxs[k % len(ctxs)]))

        def single(program: Any, ctx: Any) -> Any:
            return program.execute(ctx)

        results["single_execute"] = {
            "what": "one Program.execute(pre-built Context), timed alone",
            "checked": True,
            **summarize(time_sync(single, pairs, repeat, warmup), len(pairs)),
        }

    def context_build(tool: str, args: dict[str, Any]) -> Any:
        return Context(variables={"tool": {"name": tool}, "args": args})

    results["context_build"] = {
        "what": "cel.Context(variables=...) alone (part of full_ruleset)",
        "checked": False,
        **summarize(time_sync(context_build, calls, repeat, warmup), n, no_match),
    }
    results["one_program_list"] = {
        "what": f"one program '[c1, ..., c{n_rules}]' per call + Context build",
        "checked": True,
        **summarize(time_sync(one_program_list, calls, repeat, warmup), n, no_match),
    }
    d_repeat = dict_context_repeat if dict_context_repeat is not None else max(repeat // 10, 200)
    results["dict_context"] = {
        "what": f"{n_rules} Program.execute(plain dict), one after another",
        "checked": True,
        **summarize(time_sync(dict_context, calls, d_repeat, min(warmup, d_repeat)), n, no_match),
    }

    return {
        "peer": "cel",
        "n_rules": n_rules,
        "n_calls": n,
        "repeat": repeat,
        "warmup": warmup,
        "decisions": decision_histogram(rules, calls),
        "versions": cel_versions(),
        "compile_once": True,
        "results": results,
        "full_ruleset": results["full_ruleset"],
        "per_condition": results["per_condition"],
    }


__all__ = ["CELNotInstalledError", "bench_cel_lib", "cel_context", "cel_versions"]
