"""Before/after: the same benchmarks on two checkouts, alternating, on this machine.

    benchmarks/compare --before DIR|REV [--after DIR] [--pairs 3] [--load-pairs 2] [--quick]

(``benchmarks/compare`` sets up the venv and wrk first, then runs this module.)

Runs the in-process benchmark (``python -m benchmarks.run_all``) and the HTTP load run
(``benchmarks/load/bench.py load --bare``, ``--workers 2``, C = 16, allow and deny,
SQLite and PostgreSQL, plus the bare FastAPI endpoint) on the "before" and the "after"
code, alternating: before, after, before, after, ... The harness is always this
checkout's; the code measured is the one first on ``PYTHONPATH`` (``<tree>/src``), so the
two trees differ only in ``src/``. Both run in the same venv, with the same packages.

For every figure it reports the median over the repeats of each tree, the ratio
after / before, and the noise: the spread (max - min) / median between repeats of the
same code, the larger of the two trees'. "After" is called worse only when it moved in
the bad direction by more than that noise. It writes the ``before-after`` section of
``benchmarks/RESULTS.md`` and of ``benchmarks/load/RESULTS.md``, then the rest of both
reports from the last "after" run, and keeps every raw figure in
``benchmarks/results/compare-*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
LOAD_RESULTS = HERE / "load" / "RESULTS.md"
RAW_DIR = HERE / "results"
SECTION = "before-after"


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- trees


def resolve_tree(spec: str) -> Path:
    """A directory holding ``src/warden``, or a git revision checked out as a worktree
    beside the temp dir (created once, reused after; this checkout is not touched)."""
    path = Path(spec).expanduser()
    if (path / "src" / "warden").is_dir():
        return path.resolve()
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if rev.returncode != 0:
        raise SystemExit(
            f"compare: {spec!r} is neither a checkout with src/warden nor a git revision"
        )
    target = Path(tempfile.gettempdir()) / f"warden-compare-{rev.stdout.strip()}"
    if not (target / "src" / "warden").is_dir():
        log(f"git worktree add {target} {spec}")
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(target), spec],
            check=True,
            capture_output=True,
            text=True,
        )
    return target


def describe_tree(tree: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    rev = git("log", "-1", "--format=%h %s")
    dirty = git("status", "--porcelain", "--", "src")
    return f"{rev[:90]}{' + uncommitted changes in src/' if dirty else ''}" if rev else str(tree)


def tree_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    return env


# --------------------------------------------------------------------------- running


def run_inprocess(
    tree: Path, label: str, i: int, ns: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    raw = tmp / f"inproc-{label}-{i}.json"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.run_all",
        "--no-history",
        "--out",
        str(tmp / f"report-{label}-{i}.md"),
        "--raw-out",
        str(raw),
    ]
    cmd += ["--quick"] if ns.quick else []
    cmd += ["--no-postgres"] if ns.no_postgres else []
    env = tree_env(tree)
    env["WARDEN_BENCH_COMMAND"] = f"benchmarks/compare ({label} #{i + 1})"
    log(f"in-process benchmark, {label} #{i + 1} ({tree})")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"run_all failed on {label}:\n{done.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(raw.read_text())
    return out


def run_load(tree: Path, label: str, i: int, ns: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    raw = tmp / f"load-{label}-{i}.json"
    cmd = [
        sys.executable,
        str(HERE / "load" / "bench.py"),
        "load",
        "--bare",
        "--no-report",
        "--workers",
        ns.load_workers,
        "--concurrency",
        ns.load_concurrency,
        "--max-wait",
        str(ns.max_wait),
        "--attempts",
        str(ns.attempts),
        "--raw-out",
        str(raw),
    ]
    if ns.quick:
        cmd.append("--quick")
    else:
        cmd += ["--warmup", str(ns.load_warmup), "--duration", str(ns.load_duration)]
    cmd += ["--no-postgres"] if ns.no_postgres else []
    log(f"HTTP load, {label} #{i + 1} ({tree})")
    done = subprocess.run(
        cmd,
        cwd=ROOT,
        env=tree_env(tree),
        text=True,
        check=False,
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
    )
    if not raw.exists():
        raise SystemExit(
            f"load run failed on {label} (exit {done.returncode}):\n{done.stdout[-2000:]}"
        )
    out: dict[str, Any] = json.loads(raw.read_text())
    out["exit_code"] = done.returncode
    return out


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    lower_is_better: bool
    get: Callable[[dict[str, Any]], float | None]


def _headline(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda run: run["headline"].get(key)


def _governed(store: str, kind: str, n: int, what: str) -> Callable[[dict[str, Any]], float | None]:
    def get(run: dict[str, Any]) -> float | None:
        for r in run["governed"]["rows"]:
            if (r["store"], r["kind"], r["n_rules"]) == (store, kind, n):
                return float(r[what])
        return None

    return get


INPROC_FIGURES = (
    Figure(
        "policy_100",
        "100-rule policy evaluation, median",
        "µs",
        True,
        _headline("policy_100_median_us"),
    ),
    Figure(
        "policy_100_worst",
        "100-rule worst case (all rules on the tool), median",
        "µs",
        True,
        _headline("policy_100_worst_median_us"),
    ),
    Figure(
        "read_100",
        "governed read, SQLite, 100 rules, median",
        "µs",
        True,
        _governed("sqlite", "read", 100, "median_us"),
    ),
    Figure(
        "read_20",
        "governed read, SQLite, 20 rules, median",
        "µs",
        True,
        _governed("sqlite", "read", 20, "median_us"),
    ),
    Figure(
        "write_100",
        "governed write, SQLite, 100 rules, median",
        "µs",
        True,
        _governed("sqlite", "write", 100, "median_us"),
    ),
    Figure(
        "write_20",
        "governed write, SQLite, 20 rules, median",
        "µs",
        True,
        _governed("sqlite", "write", 20, "median_us"),
    ),
    Figure(
        "read_cps",
        "governed reads/s, SQLite (worse of 20/100 rules)",
        "/s",
        False,
        _headline("read_calls_per_s"),
    ),
    Figure(
        "write_cps",
        "governed writes/s, SQLite (worse of 20/100 rules)",
        "/s",
        False,
        _headline("write_calls_per_s"),
    ),
    Figure(
        "pg_read_100",
        "governed read, PostgreSQL, 100 rules, median",
        "µs",
        True,
        _governed("postgresql", "read", 100, "median_us"),
    ),
    Figure(
        "pg_write_100",
        "governed write, PostgreSQL, 100 rules, median",
        "µs",
        True,
        _governed("postgresql", "write", 100, "median_us"),
    ),
    Figure(
        "speedup_agt",
        "100-rule evaluation: AGT PolicyEvaluator ÷ Warden",
        "x",
        False,
        _headline("policy_100_speedup_vs_agt"),
    ),
    Figure(
        "read_over_agt",
        "governed read (100 rules) ÷ AGT gate + StatelessKernel.execute",
        "x",
        True,
        _headline("read_100_over_agt_full_path"),
    ),
    Figure(
        "write_over_floor",
        "governed write (worse of 20/100) ÷ raw durable SQLite commit",
        "x",
        True,
        _headline("write_over_commit_floor"),
    ),
    # Calibration: code that is the same in both trees; how much the machine moved.
    Figure(
        "cal_agt",
        "calibration: AGT PolicyEvaluator, 100 rules, median",
        "µs",
        True,
        _headline("agt_policy_eval_100_median_us"),
    ),
    Figure(
        "cal_agt_full",
        "calibration: AGT gate + StatelessKernel.execute [await], median",
        "µs",
        True,
        _headline("agt_full_path_100_median_us"),
    ),
    Figure(
        "cal_commit",
        "calibration: raw durable SQLite commit, median",
        "µs",
        True,
        _headline("sqlite_commit_floor_us"),
    ),
)

#: Issue 7 section 4: (figure key, target, direction, issue's wording).
SECTION4 = (
    ("speedup_agt", 8.0, ">=", "100-rule evaluation vs AGT's PolicyEvaluator: keep >= 8x faster"),
    (
        "read_over_agt",
        1.0,
        "<=",
        "governed read vs AGT's gate + StatelessKernel.execute: aim for parity",
    ),
    ("write_over_floor", 3.0, "<=", "governed write vs the raw durable commit: aim for <= 3x"),
)


def _point(run: dict[str, Any], backend: str, path: str) -> dict[str, Any] | None:
    for p in run["points"]:
        if p["backend"] == backend and p["path"] == path:
            return dict(p)
    return None


def _load_fig(backend: str, path: str, what: str) -> Callable[[dict[str, Any]], float | None]:
    def get(run: dict[str, Any]) -> float | None:
        p = _point(run, backend, path)
        if p is None:
            return None
        if what == "share":
            bare = _point(run, "bare", path)
            return p["rps"] / bare["rps"] if bare and bare["rps"] else None
        return float(p[what])

    return get


def load_figures(runs: list[dict[str, Any]]) -> list[Figure]:
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL", "bare": "bare endpoint"}
    backends = [
        b for b in ("sqlite", "postgres", "bare") if any(_point(r, b, "allow") for r in runs)
    ]
    out = []
    for backend in backends:
        for path in ("allow", "deny"):
            name = f"{names[backend]} {path}"
            out.append(
                Figure(
                    f"{backend}_{path}_rps",
                    f"{name}: decisions/s",
                    "/s",
                    False,
                    _load_fig(backend, path, "rps"),
                )
            )
            if backend != "bare":
                out.append(
                    Figure(
                        f"{backend}_{path}_share",
                        f"{name}: share of the bare endpoint",
                        "%",
                        False,
                        _load_fig(backend, path, "share"),
                    )
                )
            out.append(
                Figure(
                    f"{backend}_{path}_p50",
                    f"{name}: p50",
                    "ms",
                    True,
                    _load_fig(backend, path, "p50_ms"),
                )
            )
            out.append(
                Figure(
                    f"{backend}_{path}_p99",
                    f"{name}: p99",
                    "ms",
                    True,
                    _load_fig(backend, path, "p99_ms"),
                )
            )
    return out


def compare_figure(
    fig: Figure, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> dict[str, Any]:
    b = [v for v in (fig.get(r) for r in before) if v is not None]
    a = [v for v in (fig.get(r) for r in after) if v is not None]
    row: dict[str, Any] = {
        "key": fig.key,
        "label": fig.label,
        "unit": fig.unit,
        "lower_is_better": fig.lower_is_better,
        "before": b,
        "after": a,
    }
    if not b or not a:
        row["verdict"] = "not measured"
        return row
    mb, ma = statistics.median(b), statistics.median(a)

    def spread(xs: list[float]) -> float:
        med = statistics.median(xs)
        return (max(xs) - min(xs)) / med if len(xs) > 1 and med else 0.0

    noise = max(spread(b), spread(a))
    ratio = ma / mb if mb else float("inf")
    worse_by = (ratio - 1.0) if fig.lower_is_better else (1.0 - ratio)
    row.update(
        before_median=mb,
        after_median=ma,
        ratio=ratio,
        noise=noise,
        spread_before=spread(b),
        spread_after=spread(a),
        worse_by=worse_by,
    )
    if len(b) < 2 and len(a) < 2:
        row["verdict"] = "one run each: noise unknown"
    elif worse_by > noise:
        row["verdict"] = "WORSE beyond the noise"
    elif -worse_by > noise:
        row["verdict"] = "better beyond the noise"
    else:
        row["verdict"] = "within the noise"
    return row


# --------------------------------------------------------------------------- report


def _v(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "%":
        return f"{x:.0%}"
    if unit == "x":
        return f"{x:.2f}x"
    if unit == "/s":
        return f"{x:,.0f}"
    return f"{x:,.2f}" if x < 10 else f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| figure | unit | before (median) | after (median) | after / before | noise | verdict |"
        " before, each run | after, each run |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        u = r["unit"]
        each_b = ", ".join(_v(x, u) for x in r["before"]) or "-"
        each_a = ", ".join(_v(x, u) for x in r["after"]) or "-"
        verdict = r["verdict"]
        if verdict.startswith("WORSE"):
            verdict = f"**{verdict}**"
        out.append(
            f"| {r['label']} | {u} | {_v(r.get('before_median'), u)} | {_v(r.get('after_median'), u)} "
            f"| {r['ratio']:.3f} | ±{r['noise'] / 2:.1%} | {verdict} | {each_b} | {each_a} |"
            if "ratio" in r
            else f"| {r['label']} | {u} | - | - | - | - | {verdict} | {each_b} | {each_a} |"
        )
    return out


def _disk(path: str) -> str:
    """The block device under ``path``: name, size, rotational or not, model (lsblk)."""
    try:
        dev = subprocess.run(
            ["df", "--output=source", path], capture_output=True, text=True, check=False
        ).stdout.split()[-1]
        info = subprocess.run(
            ["lsblk", "-dno", "NAME,SIZE,ROTA,MODEL", dev],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split(None, 3)
    except (OSError, IndexError):
        return "unknown"
    if len(info) < 3:
        return dev
    kind = "rotational" if info[2] == "1" else "non-rotational (SSD or virtual)"
    model = f", {info[3].strip()}" if len(info) > 3 and info[3].strip() else ""
    return f"{dev} ({info[1]}, {kind}{model})"


def machine_lines(first: dict[str, Any] | None, load: dict[str, Any] | None) -> list[str]:
    if first is None:
        if load is None:
            return ["* not recorded"]
        m = load["machine"]
        return [
            f"* CPU: {m['cpu']}; {m['cores']} cores ({m['virt']})",
            f"* RAM: {m['ram_gib']} GiB",
            f"* Disk under the SQLite files: {_disk(tempfile.gettempdir())}",
            f"* OS and kernel: {m['os']}, kernel {m['kernel']}",
            f"* Python: {m['python']}",
        ]
    m = first["machine"]
    floor = first["floor"]
    return [
        f"* CPU: {m['cpu']}; {m['cores']} logical cores ({m['usable_cores']} usable)",
        f"* RAM: {m['ram_gib']} GiB",
        f"* Disk under the SQLite files: {_disk(tempfile.gettempdir())}, "
        f"{floor.get('filesystem', '?')}; raw fsync of 4 KiB {_v(floor.get('fsync_4k_us'), 'µs')} µs, "
        f"raw durable SQLite commit {_v(floor.get('sqlite_commit_us'), 'µs')} µs (first run)",
        f"* OS and kernel: {m['os']}",
        f"* Python: {m['python']} ({platform.python_implementation()}, "
        f"venv `{Path(sys.executable).parent.parent.name}`, the same for both trees)",
    ]


def render(raw: dict[str, Any]) -> tuple[str, str]:
    """The ``before-after`` sections of benchmarks/RESULTS.md and of load/RESULTS.md."""
    before, after = raw["inproc"]["before"], raw["inproc"]["after"]
    lb, la = raw["load"]["before"], raw["load"]["after"]
    inproc_rows = [compare_figure(f, before, after) for f in INPROC_FIGURES]
    lfigs = load_figures(lb + la)
    load_rows = [compare_figure(f, lb, la) for f in lfigs]
    by_key = {r["key"]: r for r in inproc_rows + load_rows}
    head = [
        "## Before / after (`benchmarks/compare`)",
        "",
        f"Run {raw['started']} to {raw['finished']}"
        + (" with `--quick` (**indicative only**)" if raw["quick"] else "")
        + f", command `{raw['command']}`.",
        "",
        f"* **before**: `{raw['before']['tree']}`: {raw['before']['describe']}",
        f"* **after**: `{raw['after']['tree']}`: {raw['after']['describe']}",
        f"* order: {', '.join(raw['order'])}",
        "",
    ]
    waited = raw.get("waited_note")
    if waited:
        head += [f"**{waited}**", ""]
    method = [
        "Both trees run with this checkout's harness and the same venv; only `PYTHONPATH` "
        "(`<tree>/src`) differs. `noise` is ± half the larger spread (max - min) / median between "
        "the repeats of the same code (either tree); **after is called worse only when it moved "
        "in the bad direction by more than the full spread**, i.e. outside the range that repeats "
        "of one tree cover. With 2-3 repeats per tree the noise is itself rough; the calibration "
        "rows (code that is identical in both trees) show how much the machine moved.",
        "",
    ]
    sec: list[str] = [
        *head,
        "**Machine**",
        "",
        *machine_lines((after or before or [None])[0], (la or lb or [None])[0]),
        "",
        *method,
    ]
    sec += [
        "### Issue 7 section 4 figures",
        "",
        "| figure | before | after | after / before | noise | target | after meets it |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for key, target, direction, wording in SECTION4:
        r = by_key[key]
        if "after_median" not in r:
            sec.append(f"| {wording} | - | - | - | - | {direction} {target:g} | not measured |")
            continue
        ok = r["after_median"] >= target if direction == ">=" else r["after_median"] <= target
        sec.append(
            f"| {wording} | {_v(r['before_median'], 'x')} | {_v(r['after_median'], 'x')} | {r['ratio']:.3f} "
            f"| ±{r['noise'] / 2:.1%} | {direction} {target:g}x | {'**PASS**' if ok else '**FAIL**'} |"
        )
    for backend in ("sqlite", "postgres"):
        for path in ("allow", "deny"):
            r = by_key.get(f"{backend}_{path}_share")
            settings = raw["load_settings"]
            name = (
                f"HTTP {path} ({'SQLite' if backend == 'sqlite' else 'PostgreSQL'}, "
                f"--workers {settings['workers']}, C={settings['concurrency']}) "
                "vs the bare endpoint: aim >= 30%"
            )
            if r is None or "after_median" not in r:
                sec.append(f"| {name} | - | - | - | - | >= 30% | not measured |")
                continue
            ok = r["after_median"] >= 0.30
            sec.append(
                f"| {name} | {r['before_median']:.0%} | {r['after_median']:.0%} | {r['ratio']:.3f} "
                f"| ±{r['noise'] / 2:.1%} | >= 30% | {'**PASS**' if ok else '**FAIL**'} |"
            )
    # Calibration rows run the same code in both trees: their moves are the machine's.
    worse = [
        r
        for r in inproc_rows + load_rows
        if r["verdict"].startswith("WORSE") and not r["key"].startswith(("cal_", "bare_"))
    ]
    sec += [
        "",
        "### Does any figure get worse beyond the noise?",
        "",
        (
            "**Yes**: "
            + "; ".join(
                f"{r['label']} ({_v(r['before_median'], r['unit'])} → {_v(r['after_median'], r['unit'])}"
                f"{'' if r['unit'] in ('x', '%') else ' ' + r['unit']}, {r['worse_by']:+.1%} worse, "
                f"noise ±{r['noise'] / 2:.1%})"
                for r in worse
            )
            + "."
        )
        if worse
        else "**No**: every figure is within the noise or better.",
        "",
        "(Calibration rows, whose code is the same in both trees, are left out of this list: "
        "when they move, the machine moved.)",
        "",
        f"### In process (`benchmarks/run_all`, {len(before)} + {len(after)} runs)",
        "",
        *_table(inproc_rows),
        "",
        f"### HTTP load (`benchmarks/load/bench.py load --bare`, {len(lb)} + {len(la)} runs)",
        "",
        "Full table: [`load/RESULTS.md`](load/RESULTS.md#before--after-benchmarkscompare)."
        if lb or la
        else "Not run (`--load-pairs 0`).",
        "",
    ]
    if lb or la:
        sec += _table([r for r in load_rows if r["key"].endswith(("_rps", "_share"))])
        sec.append("")
    breakdown = _breakdown_side_by_side(before, after)
    if breakdown:
        sec += breakdown
    load_sec = [
        *head,
        f"`--workers {raw['load_settings']['workers']}`, C = {raw['load_settings']['concurrency']}, "
        f"{raw['load_settings']['warmup']} s warm-up + {raw['load_settings']['duration']} s measured per point; "
        "the bare FastAPI endpoint (`bare.py`) is measured in every run, so its rows are a noise "
        "sample of code that does not change. Method and verdict rule: "
        "[`../RESULTS.md`](../RESULTS.md#before--after-benchmarkscompare).",
        "",
        *method,
        *(_table(load_rows) if load_rows else ["Not run."]),
        "",
    ]
    return "\n".join(sec), "\n".join(load_sec)


def _breakdown_side_by_side(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """Mean µs per call per stage, median over the runs of each tree (last table of each)."""
    out: list[str] = []
    labels = sorted({lab for r in before + after for lab in r.get("breakdown", {})})
    for label in labels:

        def per_part(runs: list[dict[str, Any]], label: str = label) -> dict[str, float]:
            acc: dict[str, list[float]] = {}
            for r in runs:
                b = r.get("breakdown", {}).get(label, {})
                for row in b.get("rows", []):
                    acc.setdefault(row["part"], []).append(row["us_per_call"])
            return {k: statistics.median(v) for k, v in acc.items()}

        def whole(runs: list[dict[str, Any]], label: str = label) -> float | None:
            vals = [
                r["breakdown"][label]["median_us"]
                for r in runs
                if "median_us" in r.get("breakdown", {}).get(label, {})
            ]
            return statistics.median(vals) if vals else None

        pb, pa = per_part(before), per_part(after)
        if not pb and not pa:
            continue
        out += [
            f"**Where the time goes, {label}, 100 rules** (mean µs per call, median over the runs; "
            f"whole call median: before {_v(whole(before), 'µs')} µs, after {_v(whole(after), 'µs')} µs). "
            "Before, a stage's row is its own time (flat lists); after, stages wrap the rest and each "
            "row is the stage's time exclusive of the stages inside it. Stages were renamed or split, "
            "so rows present on one side only are expected.",
            "",
            "| part | before µs/call | after µs/call |",
            "|---|---:|---:|",
        ]
        parts = list(dict.fromkeys([*pb, *pa]))
        for part in parts:
            out.append(f"| {part} | {_v(pb.get(part), 'µs')} | {_v(pa.get(part), 'µs')} |")
        out.append("")
    return out


def write_section(path: Path, name: str, body: str) -> None:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in current and end in current:
        start, stop = current.index(begin), current.index(end) + len(end)
        current = current[:start] + block + current[stop:]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(current, encoding="utf-8")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--before", required=True, help="checkout dir, or a git revision (made a worktree)"
    )
    p.add_argument("--after", default=str(ROOT), help="checkout dir or revision [this checkout]")
    p.add_argument("--pairs", type=int, default=3, help="in-process before/after pairs [3]")
    p.add_argument("--load-pairs", type=int, default=2, help="HTTP load before/after pairs [2]")
    p.add_argument("--quick", action="store_true", help="few samples: a smoke test of the harness")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--load-workers", default="2")
    p.add_argument("--load-concurrency", default="16")
    p.add_argument("--load-warmup", type=float, default=5.0)
    p.add_argument("--load-duration", type=float, default=15.0)
    p.add_argument(
        "--max-wait",
        type=float,
        default=300.0,
        help="before each load point, wait up to this many s for an idle machine [300]",
    )
    p.add_argument("--attempts", type=int, default=3, help="per load point, see load/README.md [3]")
    p.add_argument("--note", help="a line to put at the top of the section (e.g. why now)")
    p.add_argument(
        "--no-report", action="store_true", help="raw figures only; RESULTS.md untouched"
    )
    ns = p.parse_args(argv)

    before_tree, after_tree = resolve_tree(ns.before), resolve_tree(ns.after)
    started = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="warden-compare-"))
    trees = {"before": before_tree, "after": after_tree}
    inproc: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    load: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    order: list[str] = []
    t0 = time.monotonic()
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    partial = tmp / "compare-partial.json"
    log(f"raw figures so far: {partial}")
    for i in range(ns.pairs):
        for label in ("before", "after"):
            inproc[label].append(run_inprocess(trees[label], label, i, ns, tmp))
            order.append(f"in-process {label}")
            # Kept as it goes: a run that fails later does not lose what was measured.
            partial.write_text(json.dumps({"inproc": inproc, "load": load}, default=str))
    for i in range(ns.load_pairs):
        for label in ("before", "after"):
            load[label].append(run_load(trees[label], label, i, ns, tmp))
            order.append(f"load {label}")
            partial.write_text(json.dumps({"inproc": inproc, "load": load}, default=str))
    raw: dict[str, Any] = {
        "started": f"{started:%Y-%m-%d %H:%M} UTC",
        "finished": f"{datetime.now(UTC):%H:%M} UTC",
        "elapsed_s": round(time.monotonic() - t0),
        "command": "benchmarks/compare " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": ns.quick,
        "before": {"tree": str(before_tree), "describe": describe_tree(before_tree)},
        "after": {"tree": str(after_tree), "describe": describe_tree(after_tree)},
        "order": order,
        "waited_note": ns.note,
        "load_settings": {
            "workers": ns.load_workers,
            "concurrency": ns.load_concurrency,
            "warmup": 1.0 if ns.quick else ns.load_warmup,
            "duration": 3.0 if ns.quick else ns.load_duration,
        },
        "inproc": inproc,
        "load": load,
    }
    raw_file = RAW_DIR / ("compare-quick.json" if ns.quick else "compare-latest.json")
    raw_file.write_text(json.dumps(raw, indent=1, default=str) + "\n")
    main_sec, load_sec = render(raw)
    print(main_sec)
    if ns.no_report:
        log(f"raw figures: {raw_file}; RESULTS.md untouched (--no-report)")
        return 0
    write_section(RESULTS, SECTION, main_sec)
    write_section(LOAD_RESULTS, SECTION, load_sec)
    _rewrite_reports_from_last_after(inproc["after"], load["after"])
    log(f"wrote {RESULTS.relative_to(ROOT)} and {LOAD_RESULTS.relative_to(ROOT)}; raw: {raw_file}")
    return 0


def _rewrite_reports_from_last_after(
    inproc: list[dict[str, Any]], load: list[dict[str, Any]]
) -> None:
    """The rest of both reports, from the last "after" run, so RESULTS.md is one consistent
    picture of the code as it is now (its before-after section included)."""
    if inproc:
        from .run_all import _kept_sections
        from .run_all import render as render_inproc

        last = inproc[-1]
        (RAW_DIR / "latest.json").write_text(json.dumps(last, indent=2, default=str) + "\n")
        same = [
            {"headline": r["headline"], "date": r["date"], "source": r["source"]["fingerprint"]}
            for r in inproc
        ]
        report = render_inproc(last, same)
        RESULTS.write_text(report + _kept_sections(RESULTS), encoding="utf-8")
    if load:
        sys.path.insert(0, str(HERE / "load"))
        import bench  # benchmarks/load/bench.py, a script directory, not a package

        last = load[-1]
        (bench.RAW / "load-latest.json").write_text(json.dumps(last, indent=1, default=str))
        points = [bench.Point(**p) for p in last["points"]]
        bench.write_section("load", bench.render_load(last, points))
        bench.write_summary()


if __name__ == "__main__":
    raise SystemExit(main())
