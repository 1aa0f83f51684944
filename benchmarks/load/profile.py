"""Where a governed call's time goes in ``warden serve`` under load.

    python benchmarks/load/profile.py [--store postgres|sqlite] [--path allow|deny]
                                      [--concurrency 16] [--seconds 20]

(``benchmarks/load/profile`` runs it in the benchmark venv.) Two views:

1. **Statements per call** (in process: ``create_app`` driven through
   ``httpx.ASGITransport``, every DB-API statement counted on the request path and on
   the ledger's background flusher, and transactions counted).
2. **Wall time per call in the worker** (a real ``warden serve --workers 1`` at
   ``--concurrency`` connections from wrk, sampled with ``py-spy record --idle``). With
   one event loop per worker, its wall time is the budget: everything the loop does,
   including waiting on the database with the loop blocked, divided by the calls it
   answered. Samples from other threads (the ledger flusher, the threadpool that runs
   FastAPI's sync dependencies) are listed separately.

Writes the report to stdout, to ``benchmarks/load/results/profile-<store>-<path>.txt``,
and to the "profile" section of ``benchmarks/load/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

# -- 1. statements per call ---------------------------------------------------------------


def _norm_sql(sql: str) -> str:
    sql = re.sub(r"\s+", " ", sql.strip())
    sql = re.sub(r"\(\s*%s(?:\s*,\s*%s)*\s*\)", "(...)", sql)
    sql = re.sub(r"\(\s*\?(?:\s*,\s*\?)*\s*\)", "(...)", sql)
    sql = re.sub(r"'[^']*'", "'…'", sql)
    sql = re.sub(r"\b\d+\b", "N", sql)
    # SQLAlchemy's SELECT lists every column: keep the table.
    sql = re.sub(r"^SELECT .*? FROM (\w+)", r"SELECT … FROM \1", sql)
    return sql[:110]


class StatementCounter:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = collections.Counter()
        self.lock = threading.Lock()
        self.enabled = False

    def note(self, sql: str) -> None:
        if not self.enabled:
            return
        who = "flusher" if threading.current_thread().name == "warden-ledger-flush" else "request"
        with self.lock:
            self.counts[(who, _norm_sql(sql))] += 1


def statement_census(store_url: str, path: str, calls: int, runs: int) -> dict[str, Any]:
    """Run ``calls`` governed calls over HTTP-in-process and count every statement."""
    import httpx

    from warden.server import ServerSettings, create_app

    counter = StatementCounter()
    undo: list[Any] = []
    if store_url.startswith("sqlite"):
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        def on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.set_trace_callback(counter.note)

        event.listen(Engine, "connect", on_connect)
        undo.append(lambda: event.remove(Engine, "connect", on_connect))
    else:
        import psycopg

        originals = {}
        for cls in (psycopg.Cursor, psycopg.ClientCursor):
            for meth in ("execute", "executemany"):
                orig = cls.__dict__.get(meth)
                if orig is None:
                    continue
                originals[(cls, meth)] = orig

                def wrapped(self: Any, query: Any, *a: Any, _orig: Any = orig, **kw: Any) -> Any:
                    q = query if isinstance(query, str) else getattr(query, "as_string", lambda _c: str(query))(None)
                    counter.note(q if isinstance(q, str) else str(q))
                    return _orig(self, query, *a, **kw)

                setattr(cls, meth, wrapped)
        undo.append(lambda: [setattr(c, m, o) for (c, m), o in originals.items()])

    key = bench.create_key(store_url)
    settings = ServerSettings(
        store=store_url, specs=[str(bench.SPEC)], tools=[bench.TOOLS], auto_migrate=True
    )
    app = create_app(settings)
    state = app.state.warden
    sign = -1 if path == "deny" else 1

    async def drive() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://x", headers=headers) as c:
            run_ids = []
            for i in range(runs):
                r = await c.post("/v1/runs", json={"workflow": bench.WORKFLOW, "agent": "bench", "task": f"p{i}"})
                run_ids.append(r.json()["run_id"])
            n = 0

            async def one(run_id: str) -> None:
                nonlocal n
                n += 1
                r = await c.post(
                    f"/v1/runs/{run_id}/actions",
                    json={"tool": "noop", "args": {"x": sign * n, "account": "acct_1", "region": "eu"}},
                )
                assert r.status_code == 200, r.text

            for _ in range(50):  # warm-up: key cache, switch board, pools
                await asyncio.gather(*(one(r) for r in run_ids))
            for g in state.gateways.values():
                g.flush()
            xact0 = _xacts(store_url)
            counter.enabled = True
            t0 = time.perf_counter()
            rounds = max(1, calls // runs)
            for _ in range(rounds):
                await asyncio.gather(*(one(r) for r in run_ids))
            for g in state.gateways.values():
                g.flush()
            wall = time.perf_counter() - t0
            counter.enabled = False
            xact1 = _xacts(store_url)
            return {"calls": rounds * runs, "wall_s": wall, "xacts": None if xact0 is None else xact1 - xact0}  # type: ignore[operator]

    try:
        out = asyncio.run(drive())
    finally:
        state.close()
        for fn in undo:
            fn()
    n = out["calls"]
    rows = sorted(counter.counts.items(), key=lambda kv: (kv[0][0], -kv[1]))
    out["statements"] = [
        {"thread": who, "sql": sql, "per_call": cnt / n} for (who, sql), cnt in rows
    ]
    out["per_call"] = {
        who: sum(c for (w, _), c in counter.counts.items() if w == who) / n
        for who in ("request", "flusher")
    }
    return out


def _xacts(store_url: str) -> int | None:
    if store_url.startswith("sqlite"):
        return None
    from sqlalchemy import create_engine, text

    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            v = conn.execute(
                text(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                    " WHERE datname = current_database()"
                )
            ).scalar()
            # pg_stat is updated at most every PGSTAT_MIN_INTERVAL; give it a moment.
            return int(v or 0)
    finally:
        engine.dispose()


# -- 2. py-spy under load ---------------------------------------------------------------------

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("/src/", "/site-packages/", "/lib/python3.11/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return Path(path).name


LAYERS = [
    ("h11 (HTTP/1.1 parsing and writing)", ("h11/",)),
    ("uvicorn protocol", ("uvicorn/",)),
    ("asyncio loop + selectors", ("asyncio/", "selectors.py")),
    ("anyio / threadpool hand-off", ("anyio/", "concurrent/futures", "threading.py", "queue.py")),
    ("starlette", ("starlette/",)),
    ("fastapi (routing, deps, validation, serialization)", ("fastapi/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("psycopg (incl. waiting for PostgreSQL)", ("psycopg/", "psycopg_binary/", "psycopg_pool/")),
    ("warden: store", ("warden/store/",)),
    ("warden: ledger", ("warden/ledger/",)),
    ("warden: policy (CEL)", ("warden/policy/",)),
    ("warden: pipeline", ("warden/pipeline/",)),
    ("warden: server", ("warden/server/",)),
    ("warden: auth", ("warden/auth/",)),
    ("warden: other", ("warden/",)),
    ("json / stdlib", ("json/", "uuid.py", "datetime", "hashlib", "hmac.py")),
]

# Inclusive wall time of these frames (function names, qualified by class where needed).
MARKERS = [
    ("HTTP request through the ASGI app", "run_asgi", "uvicorn/"),
    ("  FastAPI app (routing, deps, handler, response)", "__call__", "fastapi/applications.py"),
    ("    authenticate (async dependency)", "authenticate", "warden/server/_deps.py"),
    ("    threadpool hand-off awaited by the loop", "run_in_threadpool", "starlette/concurrency.py"),
    ("    propose (the handler)", "propose", "warden/server/api/runs.py"),
    ("      claim_step: UPDATE runs ... RETURNING (takes the step)", "claim_step", "warden/pipeline/_runs.py"),
    ("      resume_run: the run's state from that row", "resume_run", "warden/gateway.py"),
    ("      Run.call: the pipeline", "Run.call", "warden/gateway.py"),
    ("        Pipeline.call: all stages", "Pipeline.call", "warden/pipeline/_pipeline.py"),
    # Stages wrap the rest (warden/pipeline/stages/_*.py; before the kernel rewrite they
    # ran one after another from warden/pipeline/_stages.py), so a stage's inclusive time
    # holds every stage inside it: read a row as "this stage and the ones after it".
    ("        RecordStage and inside (action_requested, terminal event)", "RecordStage.__call__", "warden/pipeline/"),
    ("        SwitchStage and inside", "SwitchStage.__call__", "warden/pipeline/"),
    ("        SchemaStage and inside", "SchemaStage.__call__", "warden/pipeline/"),
    ("        PolicyStage and inside", "PolicyStage.__call__", "warden/pipeline/"),
    ("          Policy.decide (CEL)", "Policy.decide", "warden/policy/"),
    ("        ExecuteStage and inside (the no-op tool)", "ExecuteStage.__call__", "warden/pipeline/"),
    ("        VerifyStage", "VerifyStage.__call__", "warden/pipeline/"),
    ("        ledger append (buffer only)", "LedgerWriter.append", "warden/ledger/_writer.py"),
    ("      Run.save: UPDATE runs SET state (versioned)", "Run.save", "warden/gateway.py"),
    ("    response serialization", "serialize_response", "fastapi/routing.py"),
    ("  SQLAlchemy Engine.connect (pool checkout)", "Engine.connect", "sqlalchemy/engine/base.py"),
    ("  DB commits (psycopg / sqlite3)", "do_commit", "sqlalchemy/engine/default.py"),
    ("  waiting on PostgreSQL (psycopg Connection.wait)", "Connection.wait", "psycopg/"),
    ("ledger flusher: write_events", "write_events", "warden/ledger/_writer.py"),
]


def pyspy_profile(store_url: str, path: str, conns: int, seconds: float) -> dict[str, Any]:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise RuntimeError("py-spy is not installed in this venv (benchmarks/load/run installs it)")
    key = bench.create_key(store_url)
    server = bench.Server(store_url, 1)
    tmp = Path(tempfile.mkdtemp(prefix="warden_load_prof_"))
    try:
        runs_file = tmp / "runs.txt"
        runs_file.write_text("\n".join(bench.open_runs(server.url, key, conns)) + "\n")
        bg = bench.wait_quiet(300)
        out: dict[str, Any] = {}

        def load() -> None:
            out["wrk"] = bench.run_wrk(
                server.url, key, runs_file, conns, seconds + 8, bench.PATHS[path]
            )

        t = threading.Thread(target=load)
        t.start()
        time.sleep(4)  # warm-up
        # Two samplers at once: with --idle (wall time: includes the loop blocked on the
        # database) and without (CPU time only).
        spies = {}
        for kind, extra in (("wall", ["--idle"]), ("cpu", [])):
            spies[kind] = subprocess.Popen(
                [str(spy), "record", "--pid", str(server.proc.pid), "--duration", str(int(seconds)),
                 "--rate", "250", "--nonblocking", "--format", "raw",
                 "--output", str(tmp / f"{kind}.txt"), *extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
        pids = server.pids()
        before = bench.CpuSample.now(pids, bench.pg_pids(store_url))
        for kind, proc in spies.items():
            _, err = proc.communicate(timeout=seconds + 60)
            if proc.returncode != 0:
                raise RuntimeError(f"py-spy ({kind}) failed: {err}")
        cpu = bench.CpuSample.now(pids, bench.pg_pids(store_url)).usage_since(before)
        t.join()
        stacks = {kind: (tmp / f"{kind}.txt").read_text() for kind in spies}
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    wrk = out["wrk"]
    calls = wrk["rps"] * seconds
    return {"stacks": stacks["wall"], "cpu_stacks": stacks["cpu"], "calls": calls,
            "rps": wrk["rps"], "p99_ms": wrk["p99"] / 1000, "errors": wrk["errors"],
            "seconds": seconds, "rate": 250, "background": bg, "cpu": cpu}


def analyse(prof: dict[str, Any], key: str = "stacks") -> dict[str, Any]:
    """Per-call µs by thread, layer, marked part and function. For the CPU samples
    (``key="cpu_stacks"``), layers and functions cover every thread, not only the loop."""
    cpu_view = key == "cpu_stacks"
    rate, calls = prof["rate"], prof["calls"]
    us = 1e6 / rate / calls  # µs per call per sample
    groups: dict[str, int] = collections.Counter()
    layers: dict[str, int] = collections.Counter()
    inclusive: dict[str, int] = collections.Counter()
    self_fn: dict[str, int] = collections.Counter()
    for line in prof[key].splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = []
        for raw in stack.split(";"):
            m = FRAME.match(raw.strip())
            if not m:
                continue
            file = m.group("file")
            frames.append((m.group("func"), file))
        if not frames:
            continue
        names = " ".join(f for f, _ in frames)
        leaf_func, leaf_file = frames[-1]
        main_thread = "Thread._bootstrap" not in names
        if "_flush_loop" in names:
            thread = "ledger flusher thread"
        elif not main_thread:
            thread = "threadpool (FastAPI's sync dependencies)"
        else:
            thread = "event loop (main thread)"
        if main_thread:
            idle = leaf_func.endswith(".select") and "selectors" in leaf_file
        else:
            # A worker thread parked on its queue or event is not working for anyone.
            idle = leaf_func.endswith(".wait") and leaf_file.startswith("threading")
        groups[f"{thread}: {'idle (waiting for work)' if idle else 'busy or blocked'}"] += count
        if idle:
            continue
        seen = set()
        for label, func, fpart in MARKERS:
            if label not in seen and any(
                (f == func or f.endswith("." + func)) and fpart in file for f, file in frames
            ):
                inclusive[label] += count
                seen.add(label)
        if not main_thread and not cpu_view:
            continue
        for label, prefixes in LAYERS:
            if any(p in leaf_file for p in prefixes):
                layers[label] += count
                break
        else:
            layers["other"] += count
        self_fn[f"{leaf_func} ({_short(leaf_file)})"] += count
    return {
        "us_per_sample": us,
        "threads": {k: v * us for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "layers": {k: v * us for k, v in sorted(layers.items(), key=lambda kv: -kv[1])},
        "markers": [(label, inclusive.get(label, 0) * us) for label, _f, _p in MARKERS],
        "self_top": [(k, v * us) for k, v in sorted(self_fn.items(), key=lambda kv: -kv[1])[:25]],
    }


# -- report ---------------------------------------------------------------------------------


def _two_cols(wall: dict[str, float], cpu: dict[str, float], limit: int | None = None) -> list[str]:
    keys = sorted(set(wall) | set(cpu), key=lambda k: -max(wall.get(k, 0), cpu.get(k, 0)))
    return [f"| {k} | {wall.get(k, 0):,.0f} | {cpu.get(k, 0):,.0f} |" for k in keys[:limit]]


def render(
    store: str, path: str, conns: int, census: dict[str, Any], prof: dict[str, Any],
    wall: dict[str, Any], cpu: dict[str, Any],
) -> str:
    budget = 1e6 / prof["rps"]
    c = prof["cpu"]
    server_us = c["server"] * 1e6 / prof["rps"]
    out = [
        f"## Profile: {'PostgreSQL' if store == 'postgres' else 'SQLite'} "
        f"(`benchmarks/load/profile --store {store} --path {path} --concurrency {conns}`)",
        "",
        f"`warden serve --workers 1`, {path} path, C={conns}: {prof['rps']:,.0f} calls/s, "
        f"p99 {prof['p99_ms']:.1f} ms, errors {prof['errors']}, while two py-spy samplers "
        f"({prof['rate']} Hz, {prof['seconds']:g} s, non-blocking) recorded the worker, one "
        "with `--idle` (wall time) and one without (CPU time). Background load before: "
        f"{prof['background']:.2f} cores. Cores used meanwhile: server {c['server']:.2f}, wrk "
        f"and the two py-spy samplers {c['wrk']:.2f}, PostgreSQL {c['pg']:.2f}, other "
        f"{c['other']:.2f}. The samplers take CPU from the server, so the rate here is below "
        "the unprofiled one in the load table.",
        "",
        f"One event loop answers {prof['rps']:,.0f} calls/s: **{budget:,.0f} µs of loop wall "
        f"time per call**, and the worker process burns **{server_us:,.0f} µs of CPU per call** "
        "(all its threads). All figures are µs per call.",
        "",
        "| thread | wall µs/call |",
        "|---|---:|",
        *[f"| {k} | {v:,.0f} |" for k, v in wall["threads"].items()],
        "",
        "**By layer** (library of the innermost Python frame; C code and waits count for the "
        "Python frame that called them). Wall: event loop only, idle excluded, so a frame "
        "waiting on the database with the loop blocked counts. CPU: every thread.",
        "",
        "| layer | wall µs/call (loop) | CPU µs/call (all threads) |",
        "|---|---:|---:|",
        *_two_cols(wall["layers"], cpu["layers"]),
        "",
        "**The governed call's parts, inclusive** (wall and CPU over all threads: the event "
        "loop awaits what FastAPI runs in the threadpool; the flusher runs beside it and "
        "competes for the GIL):",
        "",
        "| part | wall µs/call | CPU µs/call |",
        "|---|---:|---:|",
        *[
            f"| {label.replace('  ', '&nbsp;&nbsp;')} | {w:,.0f} | {dict(cpu['markers']).get(label, 0):,.0f} |"
            for label, w in wall["markers"]
        ],
        "",
        "**Top functions by own time** (innermost Python frame):",
        "",
        "| function | wall µs/call (loop) | CPU µs/call (all threads) |",
        "|---|---:|---:|",
        *_two_cols(dict(wall["self_top"]), dict(cpu["self_top"]), 20),
        "",
        f"**Database statements per call** (in process through `httpx.ASGITransport`, "
        f"{census['calls']:,} calls over {conns} runs; the ledger flusher writes in the "
        "background):",
        "",
        f"* request path: {census['per_call']['request']:.2f} statements per call; ledger "
        f"flusher: {census['per_call']['flusher']:.2f}"
        + (f"; transactions (pg_stat_database): {census['xacts'] / census['calls']:.2f} per call"
           if census.get("xacts") is not None else ""),
        "",
        "| thread | statement | per call |",
        "|---|---|---:|",
        *[
            f"| {s['thread']} | `{s['sql']}` | {s['per_call']:.2f} |"
            for s in census["statements"]
            if s["per_call"] >= 0.005
        ],
        "",
    ]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--path", choices=["allow", "deny"], default="allow")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--calls", type=int, default=2000, help="calls for the statement census")
    args = p.parse_args()
    if args.store == "postgres" and (why := bench.pg_reachable()):
        bench.log(f"PostgreSQL not reachable ({why}); use --store sqlite")
        return 2
    store_cm = bench.pg_database() if args.store == "postgres" else bench.sqlite_store()
    with store_cm as url:
        bench.log("statement census (in process) ...")
        census = statement_census(url, args.path, args.calls, args.concurrency)
    store_cm = bench.pg_database() if args.store == "postgres" else bench.sqlite_store()
    with store_cm as url:
        bench.log(f"py-spy on warden serve --workers 1 at C={args.concurrency} ...")
        prof = pyspy_profile(url, args.path, args.concurrency, args.seconds)
    text_ = render(
        args.store, args.path, args.concurrency, census, prof,
        analyse(prof, "stacks"), analyse(prof, "cpu_stacks"),
    )
    print(text_)
    bench.RAW.mkdir(exist_ok=True)
    name = f"profile-{args.store}-{args.path}"
    (bench.RAW / f"{name}.txt").write_text(text_)
    (bench.RAW / f"{name}.wall-stacks.txt").write_text(prof["stacks"])
    (bench.RAW / f"{name}.cpu-stacks.txt").write_text(prof["cpu_stacks"])
    bench.write_section(f"profile-{args.store}", text_)
    bench.log(f"wrote {bench.RESULTS.relative_to(bench.ROOT)} and results/{name}.txt (+ raw stacks)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
