"""Run the peer benchmarks and print a table.

    python -m benchmarks.peers [--rules 20,100] [--repeat 20000] [--json out.json]
    python benchmarks/peers/run_peers.py ...

(from the repository root, with the bench venv's python).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.peers._timing import timer_overhead_ns
    from benchmarks.peers.agt_bench import AGTNotInstalledError, bench_agt
    from benchmarks.peers.cel_lib_bench import CELNotInstalledError, bench_cel_lib
    from benchmarks.peers.ruleset import make_calls, make_rules
else:
    from ._timing import timer_overhead_ns
    from .agt_bench import AGTNotInstalledError, bench_agt
    from .cel_lib_bench import CELNotInstalledError, bench_cel_lib
    from .ruleset import make_calls, make_rules

# (peer, result key, label) in print order.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("agt", "policy_eval", "AGT  (a) PolicyEvaluator.evaluate"),
    ("agt", "full_path", "AGT  (b) gate + StatelessKernel.execute  [ruc]"),
    ("agt", "full_path_in_loop", "AGT      gate + StatelessKernel.execute  [await]"),
    ("agt", "kernel_only", "AGT   *  StatelessKernel.execute only    [ruc]"),
    ("agt", "kernel_only_in_loop", "AGT   *  StatelessKernel.execute only    [await]"),
    ("agt", "agt_own_setup", "AGT   ** bench_policy.py's own N-rule setup"),
    ("agt", "agentmesh_eval", "AGT      agentmesh PolicyEngine.evaluate"),
    ("cel", "full_ruleset", "CEL      Context + N x Program.execute"),
    ("cel", "per_condition", "CEL      ... per condition (row above / N)"),
    ("cel", "single_execute", "CEL      one Program.execute, timed alone"),
    ("cel", "context_build", "CEL   *  cel.Context(...) build alone"),
    ("cel", "one_program_list", "CEL      Context + one program [c1..cN]"),
    ("cel", "dict_context", "CEL      N x Program.execute(plain dict)"),
)


LABEL_W = 50


def _load_extra(spec: str) -> tuple[str, Callable[..., dict[str, Any]]]:
    """``NAME=package.module:function`` -> (NAME, function)."""
    name, _, target = spec.partition("=")
    module_name, _, func_name = target.partition(":")
    if not (name and module_name and func_name):
        raise SystemExit(f"--peer wants NAME=package.module:function, got {spec!r}")
    func = getattr(importlib.import_module(module_name), func_name)
    return name, func


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.2f}" if x < 10 else f"{x:,.1f}"


def print_table(runs: list[dict[str, Any]], overhead_ns: float) -> None:
    head = (
        f"{'rules':>5}  {'path':<{LABEL_W}} {'median µs':>10} {'p99 µs':>10} "
        f"{'no-match med':>12} {'samples':>8}  ok"
    )
    print(head)
    print("-" * len(head))
    for run in runs:
        n = run["n_rules"]
        rows: list[tuple[str, dict[str, Any]]] = []
        for peer, key, label in ROWS:
            res = run.get(peer, {}).get("results", {}).get(key)
            if res is not None:
                rows.append((label, res))
        for peer, out in run.items():
            if peer in ("n_rules", "agt", "cel") or not isinstance(out, dict):
                continue
            for key, res in out.get("results", {}).items():
                rows.append((f"{peer[:4]:<4}     {key}", res))
        for label, res in rows:
            print(
                f"{n:>5}  {label:<{LABEL_W}} "
                f"{_fmt(res['median_us']):>10} {_fmt(res['p99_us']):>10} "
                f"{_fmt(res.get('median_us_no_match')):>12} {res['samples']:>8}  "
                f"{'yes' if res.get('checked') else 'n/a'}"
            )
        print()
    print(
        "(a)/(b): the paths behind AGT's published 'policy evaluation (100 rules)' (30 µs) and"
        " 'full enforcement path' (103 µs),\n        here with our rules."
        "  [ruc] = loop.run_until_complete per call (AGT's method); [await] = in a running loop."
    )
    print("*  a component only: no rules applied (kernel: policies=[] as in AGT's bench).")
    print("** calibration: AGT's own benchmark setup on this machine; not our rules.")
    print(
        "ok = decision equals the plain-Python reference for every call (checked before timing)."
        "  no-match med = median over calls that match no rule (full scan everywhere)."
    )
    print(f"timer overhead (empty timed call): {overhead_ns:.0f} ns, included in every sample.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rules", default="20,100", help="comma-separated rule counts (default 20,100)")
    p.add_argument("--tools", type=int, default=20, help="number of tools (default 20)")
    p.add_argument("--seed", type=int, default=7, help="rule-set seed (default 7)")
    p.add_argument("--calls-per-tool", type=int, default=3, help="calls per tool (default 3)")
    p.add_argument("--call-seed", type=int, default=11)
    p.add_argument("--repeat", type=int, default=20_000, help="timed samples per path")
    p.add_argument("--warmup", type=int, default=2_000, help="untimed calls first")
    p.add_argument("--skip", default="", help="comma-separated peers to skip: agt,cel")
    p.add_argument("--json", dest="json_out", help="also write the raw results here")
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=module:function",
        help=(
            "extra engine to time side by side, e.g. warden=benchmarks.warden_bench:bench; "
            "called as function(rules, calls, repeat, warmup) and must return "
            "{'results': {key: {'median_us', 'p99_us', 'samples', ...}}}"
        ),
    )
    ns = p.parse_args(argv)

    skip = {s.strip() for s in ns.skip.split(",") if s.strip()}
    extras = [_load_extra(spec) for spec in ns.peer]
    calls = make_calls(n_tools=ns.tools, per_tool=ns.calls_per_tool, seed=ns.call_seed)
    runs: list[dict[str, Any]] = []
    print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {len(calls)} calls; {ns.repeat} samples/path after "
        f"{ns.warmup} warm-up; gc disabled while timing",
        flush=True,
    )
    for n in (int(x) for x in ns.rules.split(",") if x.strip()):
        rules = make_rules(n, n_tools=ns.tools, seed=ns.seed)
        run: dict[str, Any] = {"n_rules": n}
        if "agt" not in skip:
            try:
                run["agt"] = bench_agt(rules, calls, ns.repeat, ns.warmup)
            except AGTNotInstalledError as exc:
                print(f"AGT skipped: {exc}", file=sys.stderr)
        if "cel" not in skip:
            try:
                run["cel"] = bench_cel_lib(rules, calls, ns.repeat, ns.warmup)
            except CELNotInstalledError as exc:
                print(f"CEL skipped: {exc}", file=sys.stderr)
        for name, func in extras:
            run[name] = func(rules, calls, ns.repeat, ns.warmup)
        some = run.get("agt") or run.get("cel")
        if some:
            print(f"{n} rules: reference decisions over the calls {some['decisions']}", flush=True)
        runs.append(run)

    overhead = timer_overhead_ns()
    versions: dict[str, str] = {}
    for run in runs:
        for out in run.values():
            if isinstance(out, dict):
                versions.update(out.get("versions", {}))
    print("versions:", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    print()
    print_table(runs, overhead)
    if ns.json_out:
        Path(ns.json_out).write_text(
            json.dumps(
                {"runs": runs, "timer_overhead_ns": overhead, "versions": versions}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
