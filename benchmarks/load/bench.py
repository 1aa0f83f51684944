"""HTTP load benchmark of ``warden serve``: the governed call over loopback, driven by wrk.

    python benchmarks/load/bench.py load [--quick] [--no-postgres] [--workers 1,2] ...
    python benchmarks/load/bench.py soak [--minutes 10] [--concurrency 32] ...

Run through ``benchmarks/load/run`` and ``benchmarks/load/soak``, which install what this
needs first. Everything it starts (servers, databases, temp dirs) it also stops or removes.
Writes its own section of ``benchmarks/load/RESULTS.md`` and leaves the other one alone.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SPEC = HERE / "spec.yaml"
TOOLS = f"{HERE / 'tools.py'}:tools"
LUA = HERE / "actions.lua"
RESULTS = HERE / "RESULTS.md"
RAW = HERE / "results"
WORKFLOW = "loadbench"
PG_ADMIN_URL = os.environ.get(
    "WARDEN_LOAD_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# The target for this 2-core machine, on PostgreSQL.
TARGET_RPS = 1500.0
TARGET_P99_MS = 25.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# -- the machine ----------------------------------------------------------------------


def _sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    mem_kb = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    distro = ""
    with contextlib.suppress(OSError):
        found = re.search(r'PRETTY_NAME="(.*)"', Path("/etc/os-release").read_text())
        distro = found.group(1) if found else ""
    hv = re.search(r"Hypervisor vendor:\s*(\S+)", _sh("lscpu"))
    container = _sh("systemd-detect-virt", "--container")
    virt = ", ".join(
        x for x in (
            f"{hv.group(1)} VM" if hv else ("VM" if "hypervisor" in cpuinfo else ""),
            f"{container} container" if container and container != "none" else "",
        ) if x
    ) or "bare metal"
    packages = {}
    for name in (
        "warden", "fastapi", "starlette", "uvicorn", "h11", "httptools", "uvloop",
        "pydantic", "sqlalchemy", "psycopg", "anyio",
    ):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    wrk = _sh("wrk", "--version") or ""
    tree = warden_tree()
    git = _sh("git", "-C", str(tree), "rev-parse", "--short", "HEAD")
    digest = hashlib.sha256()
    for f in sorted((tree / "src").rglob("*.py")):
        digest.update(str(f.relative_to(tree)).encode() + b"\0" + f.read_bytes())
    dirty = _sh("git", "-C", str(tree), "status", "--porcelain", "--", "src")
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": distro,
        "virt": virt,
        "python": platform.python_version(),
        "python_path": sys.executable,
        "packages": packages,
        "wrk": wrk.splitlines()[0] if wrk else "wrk (version unknown)",
        "git": f"{git}{' + uncommitted changes in src/' if dirty else ''}" if git else "n/a",
        "tree": str(tree),
        "src_sha256": digest.hexdigest()[:12],
    }


def warden_tree() -> Path:
    """The checkout whose Warden the servers run: this one, or another put first on
    PYTHONPATH (``benchmarks/compare`` measures the code before a change that way)."""
    spec = importlib.util.find_spec("warden")
    if spec is None or spec.origin is None:
        return ROOT
    return Path(spec.origin).resolve().parent.parent.parent


def pg_info(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            out = {"version": str(conn.execute(text("SHOW server_version")).scalar())}
            for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections"):
                out[name] = str(conn.execute(text(f"SHOW {name}")).scalar())
            return out
    finally:
        engine.dispose()


# -- stores ---------------------------------------------------------------------------


def pg_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A throwaway database, dropped afterwards whatever happens."""
    name = f"warden_load_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def sqlite_store() -> Iterator[str]:
    tmp = Path(tempfile.mkdtemp(prefix="warden_load_"))
    try:
        yield f"sqlite:///{tmp / 'warden.db'}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ledger_counts(store_url: str) -> dict[str, int]:
    """Terminal events on the ledger, and ``duplicate_action_ids``: action ids that more
    than one ``action_requested`` event carries. An action id is ``<run>.<step>``, so a
    duplicate means a run's step counter went backwards (its counters were lost)."""
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT type, count(*) FROM ledger_events"
                    " WHERE type IN ('executed', 'denied', 'action_requested') GROUP BY type"
                )
            ).all()
            seen: set[str] = set()
            dup = 0
            result = conn.execution_options(stream_results=True, yield_per=10_000).execute(
                text("SELECT payload FROM ledger_events WHERE type = 'action_requested'")
            )
            for (payload,) in result:
                action_id = json.loads(payload).get("action_id")
                if action_id in seen:
                    dup += 1
                seen.add(action_id)
        out = {str(t): int(n) for t, n in rows}
        out["duplicate_action_ids"] = dup
        return out
    finally:
        engine.dispose()


def db_size(store_url: str) -> int | None:
    if store_url.startswith("sqlite"):
        path = Path(store_url.split("///", 1)[1])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())  # type: ignore[arg-type]
    finally:
        engine.dispose()


# -- the server -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def warden_bin() -> str:
    return str(Path(sys.executable).with_name("warden"))


def create_key(store_url: str) -> str:
    cmd = [warden_bin(), "keys", "create", "--role", "agent", "--name", "bench",
           "--tenant", "acme", "--agent", "bench", "--store", store_url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=clean_env())
    if done.returncode != 0 and "--agent" in done.stderr + done.stdout:
        # Warden before keys were bound to an agent (issue 7) has no --agent: any agent
        # key may open a run as any agent there.
        at = cmd.index("--agent")
        del cmd[at : at + 2]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=clean_env())
    if done.returncode != 0:
        raise RuntimeError(f"warden keys create failed: {done.stderr or done.stdout}")
    return done.stdout.strip().splitlines()[-1].strip()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}


def server_args(workers: int, port: int, store: str) -> list[str]:
    return [
        "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--store", store, "--spec", str(SPEC), "--tools", TOOLS, "--migrate",
    ]


def display_command(workers: int, store: str) -> str:
    rel_spec, rel_tools = SPEC.relative_to(ROOT), (HERE / "tools.py").relative_to(ROOT)
    return (
        f"warden serve --host 127.0.0.1 --port PORT --workers {workers} --store {store}"
        f" --spec {rel_spec} --tools {rel_tools}:tools --migrate"
    )


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def bare_command(workers: int, port: int) -> list[str]:
    """The HTTP floor (``bare.py``), with uvicorn's defaults as ``warden serve`` has them
    (uvloop, httptools)."""
    return [
        sys.executable, "-m", "uvicorn", "bare:app", "--app-dir", str(HERE), "--host",
        "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]


class Server:
    def __init__(self, store_url: str | None, workers: int) -> None:
        """``warden serve`` on ``store_url``, or the bare endpoint when it is None."""
        self.store_url, self.workers = store_url, workers
        self.port = free_port()
        env = clean_env()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="warden_load_server_", suffix=".log", delete=False)
        cmd = (
            bare_command(workers, self.port) if store_url is None
            else [warden_bin(), *server_args(workers, self.port, store_url)]
        )
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        # Generous: on a 2-core machine busy with something else, start-up (imports,
        # migrations, spawning workers) has taken over a minute.
        deadline = time.time() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"warden serve exited:\n{self.log_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"warden serve never became ready:\n{self.log_text()}")
            time.sleep(0.1)
        # Wait for every worker to be up (uvicorn answers as soon as the first one is).
        deadline = time.time() + 30
        while len(self.worker_pids()) < workers and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return Path(self.log.name).read_text()[-4000:]
        return ""

    def pids(self) -> list[int]:
        """The server process and all its descendants."""
        kids = _children()
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(kids.get(pid, []))
        return out

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the uvicorn workers (the server process itself
        when --workers 1, where uvicorn serves in-process)."""
        if self.workers == 1:
            return [self.proc.pid]
        return [p for p in self.pids() if p != self.proc.pid and "spawn_main" in _cmdline(p)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


def open_runs(url: str, key: str, n: int) -> list[str]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        out = []
        for i in range(n):
            r = c.post("/v1/runs", json={"workflow": WORKFLOW, "agent": "bench", "task": f"load {i}"})
            if r.status_code != 201:
                raise RuntimeError(f"open run: {r.status_code} {r.text}")
            out.append(r.json()["run_id"])
        return out


# -- CPU accounting ---------------------------------------------------------------------


def _proc_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def _system_ticks() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]), idle


@dataclass
class CpuSample:
    t: float
    server: int
    system_total: int
    system_idle: int
    children: float
    pg: dict[int, int]
    workers: dict[int, int]

    @classmethod
    def now(
        cls, server_pids: list[int], pg_pids: list[int] = (),  # type: ignore[assignment]
        worker_pids: list[int] = (),  # type: ignore[assignment]
    ) -> CpuSample:
        total, idle = _system_ticks()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            time.monotonic(), _proc_ticks(server_pids), total, idle, ru.ru_utime + ru.ru_stime,
            {pid: _proc_ticks([pid]) for pid in pg_pids},
            {pid: _proc_ticks([pid]) for pid in worker_pids},
        )

    def usage_since(self, before: CpuSample) -> dict[str, float]:
        """Cores used over the interval: the server, the load generator, this benchmark's
        PostgreSQL processes, and everything else (kernel, other workloads)."""
        wall = self.t - before.t
        busy = (self.system_total - before.system_total) - (self.system_idle - before.system_idle)
        total = (self.system_total - before.system_total) or 1
        cores = os.cpu_count() or 1
        all_cores = busy / total * cores
        server = (self.server - before.server) / CLK_TCK / wall
        wrk = (self.children - before.children) / wall
        # A backend born during the interval counts whole; one that exited is lost.
        pg = sum(max(0, t - before.pg.get(pid, 0)) for pid, t in self.pg.items()) / CLK_TCK / wall
        split = [
            round((t - before.workers.get(pid, t)) / CLK_TCK / wall, 2)
            for pid, t in sorted(self.workers.items())
        ]
        return {
            "server": round(server, 2),
            "workers": sorted(split, reverse=True),  # type: ignore[dict-item]
            "wrk": round(wrk, 2),
            "pg": round(pg, 2),
            "other": round(max(0.0, all_cores - server - wrk - pg), 2),
            "all": round(all_cores, 2),
        }


def pg_pids(store_url: str | None) -> list[int]:
    """PostgreSQL processes working for this benchmark, when PostgreSQL runs here: the
    backends connected to its database (their process title names it) and the server's
    auxiliary processes (WAL writer, checkpointer, ...). Read again at every sample, as
    backends come and go with the connection pool."""
    if store_url is None or store_url.startswith("sqlite"):
        return []
    db = store_url.rsplit("/", 1)[1]
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        title = _cmdline(int(entry.name)).strip()
        if title.startswith("postgres: ") and (f" {db} " in title or "(" not in title):
            out.append(int(entry.name))
    return out


def background_cores(seconds: float = 1.0) -> float:
    """Cores busy over ``seconds`` while this benchmark sends nothing (its idle server's
    own timers included, ~0.01): anything more is another workload on the machine."""
    t0, i0 = _system_ticks()
    time.sleep(seconds)
    t1, i1 = _system_ticks()
    return ((t1 - t0) - (i1 - i0)) / ((t1 - t0) or 1) * (os.cpu_count() or 1)


QUIET_CORES = 0.25
#: "other" cores during a measured point (not server, wrk or this benchmark's PostgreSQL
#: processes; loopback networking in softirq context lands here too, ~0.1 at 2,000/s).
NOISY_CORES = 0.35


def wait_quiet(max_wait_s: float) -> float:
    """Wait (up to ``max_wait_s``) until the machine is idle; returns the background load
    measured last, so a point measured next to another workload is flagged, not hidden."""
    deadline = time.monotonic() + max_wait_s
    busy = background_cores()
    warned = False
    while busy > QUIET_CORES and time.monotonic() < deadline:
        if not warned:
            log(f"  machine busy ({busy:.2f} cores used by something else); waiting up to {max_wait_s:g} s")
            warned = True
        time.sleep(4.0)
        busy = background_cores()
    return round(busy, 2)


# -- wrk --------------------------------------------------------------------------------


def run_wrk(
    url: str, key: str, runs_file: Path, conns: int, seconds: float, deny_every: int
) -> dict[str, Any]:
    env = {
        **os.environ,
        "WARDEN_LOAD_RUNS": str(runs_file),
        "WARDEN_LOAD_KEY": key,
        "WARDEN_LOAD_DENY_EVERY": str(deny_every),
    }
    cmd = [
        "wrk", "-t", str(conns), "-c", str(conns), "-d", f"{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(LUA), url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 120)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            out: dict[str, Any] = json.loads(line[8:])
            out["errors"] = (
                out["err_connect"] + out["err_read"] + out["err_write"] + out["err_timeout"]
                + out["non2xx"] + out["mismatch"]
            )
            out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
            return out
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")


# -- the load benchmark -----------------------------------------------------------------


@dataclass
class Point:
    backend: str
    workers: int
    path: str
    conns: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: int
    requests: int
    seconds: float
    cpu: dict[str, float]
    background: float
    detail: dict[str, Any] = field(default_factory=dict)


PATHS = {"allow": 0, "deny": 1}


def measure_server(
    backend: str, store_url: str | None, workers: int, concs: list[int], warmup: float,
    duration: float, max_wait: float, attempts: int,
) -> tuple[list[Point], dict[str, Any] | None]:
    """The points of one server: ``warden serve`` on ``store_url``, or the bare endpoint
    (``store_url`` None, no key and no ledger to check)."""
    key = "bare" if store_url is None else create_key(store_url)
    server = Server(store_url, workers)
    points: list[Point] = []
    answered = {"allowed": 0, "denied": 0}
    try:
        log(
            f"{backend}: {'bare endpoint' if store_url is None else 'warden serve'} --workers {workers}"
            f" up at {server.url}, pids {server.pids()}"
        )
        tmp = Path(tempfile.mkdtemp(prefix="warden_load_runs_"))
        try:
            for path, deny_every in PATHS.items():
                for conns in concs:
                    runs_file = tmp / f"{path}_{conns}.txt"
                    runs_file.write_text("\n".join(open_runs(server.url, key, conns)) + "\n")
                    # Another workload on the machine (tests, builds) would distort the
                    # point: start on an idle machine, and measure again (up to `attempts`
                    # times) if something else used more than NOISY_CORES meanwhile.
                    best: tuple[dict[str, Any], dict[str, float], float] | None = None
                    for attempt in range(attempts):
                        bg = wait_quiet(max_wait)
                        warm = run_wrk(server.url, key, runs_file, conns, warmup, deny_every)
                        pids, wpids = server.pids(), server.worker_pids()
                        before = CpuSample.now(pids, pg_pids(store_url), wpids)
                        res = run_wrk(server.url, key, runs_file, conns, duration, deny_every)
                        cpu = CpuSample.now(pids, pg_pids(store_url), wpids).usage_since(before)
                        for r in (warm, res):
                            answered["allowed"] += r["allowed"]
                            answered["denied"] += r["denied"]
                        if best is None or cpu["other"] < best[1]["other"]:
                            best = (res, cpu, bg)
                        if cpu["other"] <= NOISY_CORES:
                            break
                        log(
                            f"  {path} c={conns}: {cpu['other']:.2f} cores used by something else"
                            f" during the point ({res['rps']:.0f}/s); measuring again"
                            f" ({attempt + 2}/{attempts})" if attempt + 1 < attempts else
                            f"  {path} c={conns}: still noisy after {attempts} attempts; keeping the quietest"
                        )
                    assert best is not None
                    res, cpu, bg = best
                    point = Point(
                        backend, workers, path, conns, round(res["rps"], 1),
                        res["p50"] / 1000, res["p90"] / 1000, res["p99"] / 1000,
                        res["p999"] / 1000, res["lat_max"] / 1000, res["errors"],
                        res["requests"], res["duration_us"] / 1e6, cpu, bg,
                        {"wrk": res, "warmup_errors": warm["errors"]},
                    )
                    points.append(point)
                    log(
                        f"  {path:5} c={conns:<3} {point.rps:8.1f}/s  p50 {point.p50_ms:6.2f} ms"
                        f"  p99 {point.p99_ms:7.2f} ms  errors {point.errors}"
                        f"  cpu server {cpu['server']} (workers {cpu['workers']}) wrk {cpu['wrk']} pg {cpu['pg']}"
                        f" other {cpu['other']} (background before: {bg})"
                        + (f"  first bad: {res['first_bad'][:200]}" if res["first_bad"] else "")
                    )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        server.stop()
    if store_url is None:
        return points, None
    # Every answered decision must be on the ledger (the server flushed it at shutdown).
    # The ledger may hold a few more: calls in flight when wrk stopped were decided and
    # recorded, but their responses were not counted.
    on_ledger = ledger_counts(store_url)
    check = {
        "answered": answered,
        "ledger": on_ledger,
        "ok": all(on_ledger.get(k if k != "allowed" else "executed", 0) >= n for k, n in answered.items()),
        "unique_ids": on_ledger["duplicate_action_ids"] == 0,
    }
    log(
        f"  ledger check: answered {answered}, on the ledger {on_ledger}:"
        f" {'ok' if check['ok'] else 'MISSING EVENTS'},"
        f" {'action ids unique' if check['unique_ids'] else 'DUPLICATE ACTION IDS'}"
    )
    return points, check


def cmd_load(args: argparse.Namespace) -> int:
    concs = [int(x) for x in args.concurrency.split(",")]
    workers_list = [int(x) for x in args.workers.split(",")]
    warmup, duration = (1.0, 3.0) if args.quick else (args.warmup, args.duration)
    info = machine()
    pg_skip = "disabled with --no-postgres" if args.no_postgres else pg_reachable()
    pg = None if pg_skip else pg_info(PG_ADMIN_URL)
    if pg_skip:
        log(f"PostgreSQL rows skipped: {pg_skip} (admin URL {PG_ADMIN_URL}; set WARDEN_LOAD_PG_URL)")
    started = datetime.now(UTC)
    points: list[Point] = []
    checks: dict[str, Any] = {}
    backends = (
        (["bare"] if args.bare else [])
        + ([] if args.no_sqlite else ["sqlite"])
        + ([] if pg_skip else ["postgres"])
    )
    for backend in backends:
        for workers in workers_list:
            store_cm: contextlib.AbstractContextManager[str | None] = (
                contextlib.nullcontext() if backend == "bare"
                else sqlite_store() if backend == "sqlite" else pg_database()
            )
            with store_cm as store_url:
                got, check = measure_server(
                    backend, store_url, workers, concs, warmup, duration, args.max_wait,
                    args.attempts,
                )
                points.extend(got)
                if check is not None:
                    checks[f"{backend}/{workers}"] = check
    raw = {
        "started": started.isoformat(),
        "machine": info,
        "postgres": pg,
        "postgres_skipped": pg_skip,
        "warmup_s": warmup,
        "duration_s": duration,
        "points": [asdict(p) for p in points],
        "ledger_checks": checks,
        "quick": args.quick,
    }
    raw_out = Path(args.raw_out) if args.raw_out else RAW / "load-latest.json"
    raw_out.parent.mkdir(parents=True, exist_ok=True)
    raw_out.write_text(json.dumps(raw, indent=1, default=str))
    if args.no_report:
        log(f"raw figures: {raw_out} (--no-report: RESULTS.md untouched)")
    else:
        write_section("load", render_load(raw, points))
        write_summary()
        log(f"wrote {RESULTS.relative_to(ROOT)} (raw figures: {raw_out})")
    bad = sum(p.errors for p in points)
    return 1 if bad or not all(c["ok"] and c["unique_ids"] for c in checks.values()) else 0


def _machine_lines(info: dict[str, Any], pg: dict[str, str] | None) -> list[str]:
    pk = info["packages"]
    lines = [
        f"* CPU: {info['cpu']}, {info['cores']} cores ({info['virt']}); RAM {info['ram_gib']} GiB",
        f"* OS: {info['os']}, kernel {info['kernel']}",
        f"* Python {info['python']}; warden {pk['warden']} (git {info['git']}, src/ sha256 "
        f"{info.get('src_sha256', '?')}); "
        f"fastapi {pk['fastapi']}, starlette {pk['starlette']}, uvicorn {pk['uvicorn']} "
        f"(h11 {pk['h11']}, httptools {pk['httptools']}, uvloop {pk['uvloop']}), "
        f"pydantic {pk['pydantic']}, SQLAlchemy {pk['sqlalchemy']}, psycopg {pk['psycopg']}, "
        f"anyio {pk['anyio']}",
        f"* Load generator: {info['wrk']}, on the same machine (loopback)",
    ]
    if pg:
        lines.append(
            f"* PostgreSQL {pg['version']} on the same machine (synchronous_commit={pg['synchronous_commit']}, "
            f"fsync={pg['fsync']}, shared_buffers={pg['shared_buffers']}, "
            f"max_connections={pg['max_connections']})"
        )
    return lines


def _server_cpu(cpu: dict[str, Any]) -> str:
    split = cpu.get("workers") or []
    inner = f" ({' + '.join(f'{w:.2f}' for w in split)})" if len(split) > 1 else ""
    return f"{cpu['server']:.2f}{inner}"


def _fmt(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


STORE_LABEL = {"sqlite": "SQLite", "postgres": "PostgreSQL", "bare": "bare endpoint"}


def share_of_bare(p: Point, points: list[Point]) -> float | None:
    """``p``'s throughput as a share of the bare endpoint's at the same workers, path and C."""
    for b in points:
        if b.backend == "bare" and (b.workers, b.path, b.conns) == (p.workers, p.path, p.conns):
            return p.rps / b.rps if b.rps else None
    return None


def _share(p: Point, points: list[Point]) -> str:
    if p.backend == "bare":
        return "100%"
    share = share_of_bare(p, points)
    return "-" if share is None else f"{share:.0%}"


#: Issue 7 section 4: governed HTTP throughput as a share of the bare endpoint's.
TARGET_SHARE_OF_BARE = 0.30


def render_load(raw: dict[str, Any], points: list[Point]) -> str:
    info, pg = raw["machine"], raw["postgres"]
    out = [
        "## Throughput and latency (`benchmarks/load/run`)",
        "",
        f"Run {raw['started'][:16].replace('T', ' ')} UTC"
        + (" with `--quick` (indicative only)" if raw["quick"] else "")
        + f"; every point: {raw['warmup_s']:g} s warm-up, then {raw['duration_s']:g} s measured.",
        "",
        "**Machine**",
        "",
        *_machine_lines(info, pg),
        "",
        "**Server** (one fresh store per row group; the API key's rate limit is off, the default):",
        "",
        "```",
        display_command(1, "sqlite:///TMPDIR/warden.db"),
        display_command(2, "postgresql+psycopg://postgres@127.0.0.1:5432/warden_load_PID_RANDOM"),
        "```",
        "",
        "`--workers 1` and `--workers 2` as in the table. The workflow is "
        "`benchmarks/load/spec.yaml`: 20 rules (10 on the measured tool, all evaluated on every "
        "call), tier autonomous; the tool `noop` is an async read that does nothing, so the "
        "figures are the cost of governance alone.",
        "",
        "**Load**: `wrk -t C -c C` with `benchmarks/load/actions.lua`: C keep-alive "
        "connections, one open run per connection, each connection sends its next "
        "`POST /v1/runs/{id}/actions` as soon as the previous answer arrives (closed loop). "
        "Allow: `noop` with `x >= 0` (no rule matches, the tool runs). Deny: `x < 0` "
        "(rule `negative_amounts`). Arguments differ on every call. Every response is checked: "
        "errors = connection errors + timeouts (10 s) + non-2xx + 2xx with the wrong decision.",
        "",
        "Latency is wrk's, from sending the request to the end of the response, in ms. "
        "CPU columns: cores used during the measured interval by the server processes (with "
        "more than one worker, each worker's share in parentheses), by wrk, "
        "by PostgreSQL (the backends of the benchmark's database and the shared WAL writer, "
        "checkpointer, ...) and by everything else (kernel threads, any other workload); the "
        f"machine has {info['cores']}, so the load generator and PostgreSQL compete with the "
        "server for them.",
        "",
        "`% of bare`: decisions/s as a share of the bare FastAPI/uvicorn endpoint "
        "(`benchmarks/load/bare.py`: the same JSON body parsed with pydantic, one comparison, "
        "an answer of the same shape; no auth, run state, policy or ledger) at the same "
        "workers, path and C, measured in this run; `-` when it was not (`--no-bare`).",
        "",
        "| store | workers | path | C | decisions/s | % of bare | p50 | p90 | p99 | p99.9 | max | errors | CPU server / wrk / PG / other | bg |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for p in points:
        out.append(
            f"| {STORE_LABEL[p.backend]} | {p.workers} | {p.path} | {p.conns} "
            f"| {p.rps:,.0f} | {_share(p, points)} | {_fmt(p.p50_ms)} | {_fmt(p.p90_ms)} | {_fmt(p.p99_ms)} "
            f"| {_fmt(p.p999_ms)} | {_fmt(p.max_ms)} | {p.errors} "
            f"| {_server_cpu(p.cpu)} / {p.cpu['wrk']:.2f} / {p.cpu['pg']:.2f} / {p.cpu['other']:.2f} "
            f"| {p.background:.2f} |"
        )
    out.append("")
    noisy = [p for p in points if p.background > QUIET_CORES or p.cpu["other"] > NOISY_CORES]
    out += [
        "`bg`: cores busy on the machine in the second before the point, this benchmark idle. "
        "A point starts only on an idle machine (waiting up to `--max-wait`) and is measured "
        f"again (up to `--attempts`) when `other` exceeds {NOISY_CORES} cores. "
        + (
            f"**{len(noisy)} point(s) were still measured next to another workload; their "
            "figures are pessimistic.**"
            if noisy else "Every point was measured on an otherwise idle machine."
        ),
        "",
    ]
    checks = raw["ledger_checks"]
    ok = all(c["ok"] for c in checks.values())
    out.append(
        "Ledger check (after each server stopped): every `allowed` answer has its `executed` "
        "event and every `denied` answer its `denied` event on the ledger: "
        + ("**yes**, for every server." if ok else "**NO**: " + json.dumps(checks))
    )
    out.append("")
    dups = {k: c["ledger"].get("duplicate_action_ids", 0) for k, c in checks.items()}
    total = {k: c["ledger"].get("action_requested", 0) for k, c in checks.items()}
    if any(dups.values()):
        out.append(
            "**Action ids are NOT unique**: "
            + ", ".join(f"{k}: {dups[k]:,} of {total[k]:,}" for k in dups if dups[k])
            + " `action_requested` events repeat an earlier action id (`<run>.<step>`): the "
            "runs' step counters went backwards under load, so per-run caps (max_steps, "
            "identical calls, retries) undercount."
        )
    else:
        out.append("Action ids (`<run>.<step>`) on the ledger are unique for every server.")
    out.append("")
    if raw["postgres_skipped"]:
        out += [
            f"**PostgreSQL rows skipped**: {raw['postgres_skipped']} "
            f"(tried `{PG_ADMIN_URL}`; set `WARDEN_LOAD_PG_URL`).",
            "",
        ]
    out += [
        "**Target** (the issue, this 2-core machine): >= "
        f"{TARGET_RPS:,.0f} governed calls/s with p99 <= {TARGET_P99_MS:g} ms on PostgreSQL.",
        "",
        target_verdict(points),
        "",
        f"**Target** (issue 7 section 4): governed HTTP allow and deny at >= "
        f"{TARGET_SHARE_OF_BARE:.0%} of the bare endpoint's decisions/s.",
        "",
        share_verdict(points),
    ]
    out.append("")
    return "\n".join(out)


def share_verdict(points: list[Point]) -> str:
    """Whether every governed point with a bare counterpart is at the target share."""
    shares = [
        (p, share) for p in points
        if p.backend != "bare" and (share := share_of_bare(p, points)) is not None
    ]
    if not shares:
        return "Not measured (`--no-bare`)."
    low = [f"{STORE_LABEL[p.backend]} {p.path} C={p.conns} --workers {p.workers}: {share:.0%}"
           for p, share in shares if share < TARGET_SHARE_OF_BARE]
    span = f"{min(s for _, s in shares):.0%} to {max(s for _, s in shares):.0%}"
    if low:
        return f"**Not met** ({span}); below target: " + "; ".join(low) + "."
    return f"**Met**: every governed point is at {span} of the bare endpoint."


def target_verdict(points: list[Point]) -> str:
    """Whether a PostgreSQL point meets the issue's target, as one line."""
    pg_points = [p for p in points if p.backend == "postgres"]
    if not pg_points:
        return "Not measured: no PostgreSQL."
    meeting = [p for p in pg_points if p.rps >= TARGET_RPS and p.p99_ms <= TARGET_P99_MS and p.errors == 0]
    if meeting:
        m = max(meeting, key=lambda p: p.rps)
        return f"**Met**: {m.rps:,.0f}/s with p99 {m.p99_ms:.1f} ms ({m.path}, --workers {m.workers}, C={m.conns})."
    best = max(pg_points, key=lambda p: p.rps)
    best_allow = max((p for p in pg_points if p.path == "allow"), key=lambda p: p.rps)
    return (
        f"**Not met.** Best PostgreSQL throughput: {best.rps:,.0f}/s ({best.path}, "
        f"--workers {best.workers}, C={best.conns}, p99 {best.p99_ms:.1f} ms); allow path "
        f"best {best_allow.rps:,.0f}/s (--workers {best_allow.workers}, C={best_allow.conns}, "
        f"p99 {best_allow.p99_ms:.1f} ms): {best_allow.rps / TARGET_RPS:.0%} of the target rate."
    )


# -- the soak ----------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cmd_soak(args: argparse.Namespace) -> int:
    why = pg_reachable()
    if why is not None:
        log(f"soak needs PostgreSQL and it is not reachable at {PG_ADMIN_URL}: {why}")
        log("start PostgreSQL (trust auth for user postgres) or set WARDEN_LOAD_PG_URL")
        return 2
    info, pg = machine(), pg_info(PG_ADMIN_URL)
    total_s = args.minutes * 60
    interval = args.interval
    started = datetime.now(UTC)
    samples: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    with pg_database() as store_url:
        key = create_key(store_url)
        server = Server(store_url, args.workers)
        try:
            workers = server.worker_pids()
            log(
                f"soak: {args.minutes} min, C={args.concurrency}, every {args.deny_every}th call a deny,"
                f" --workers {args.workers}; server pid {server.proc.pid}, workers {workers}"
            )
            tmp = Path(tempfile.mkdtemp(prefix="warden_load_soak_"))
            runs_file = tmp / "runs.txt"
            runs_file.write_text("\n".join(open_runs(server.url, key, args.concurrency)) + "\n")
            t0 = time.monotonic()

            def sample(t: float) -> None:
                per = {str(pid): rss_kib(pid) for pid in server.pids()}
                work = {str(pid): per.get(str(pid)) for pid in server.worker_pids()}
                samples.append({
                    "t": round(t, 1),
                    "rss_kib": per,
                    "workers_kib": sum(v for v in work.values() if v),
                    "all_kib": sum(v for v in per.values() if v),
                    "pids": sorted(int(p) for p in per),
                })

            sample(0.0)
            # Back-to-back wrk segments of `interval` seconds (the same runs and key): each
            # gives its own rate, percentiles and errors, so the series shows drift.
            while (elapsed := time.monotonic() - t0) < total_s - 0.5:
                before = CpuSample.now(server.pids(), pg_pids(store_url), server.worker_pids())
                seg = run_wrk(
                    server.url, key, runs_file, args.concurrency,
                    min(interval, total_s - elapsed), args.deny_every,
                )
                cpu = CpuSample.now(
                    server.pids(), pg_pids(store_url), server.worker_pids()
                ).usage_since(before)
                now = time.monotonic() - t0
                sample(now)
                segments.append({"t": round(now, 1), **{k: seg[k] for k in (
                    "rps", "requests", "allowed", "denied", "errors", "p50", "p99", "p999",
                    "lat_max", "err_connect", "err_read", "err_write", "err_timeout", "non2xx",
                    "mismatch", "first_bad")}, "cpu": cpu})
                s = samples[-1]
                log(
                    f"  t={now:5.0f}s {seg['rps']:7.0f}/s p99 {seg['p99'] / 1000:6.1f} ms"
                    f" errors {seg['errors']}  cpu other {cpu['other']}"
                    f"  RSS workers {s['workers_kib'] / 1024:.1f} MiB"
                    f" (all processes {s['all_kib'] / 1024:.1f} MiB)"
                )
            shutil.rmtree(tmp, ignore_errors=True)
            size = db_size(store_url)
        finally:
            server.stop()
        ledger = ledger_counts(store_url)
    raw = {
        "started": started.isoformat(), "machine": info, "postgres": pg,
        "minutes": args.minutes, "concurrency": args.concurrency, "workers": args.workers,
        "deny_every": args.deny_every, "interval_s": interval,
        "samples": samples, "segments": segments, "db_bytes": size, "ledger": ledger,
    }
    RAW.mkdir(exist_ok=True)
    (RAW / "soak-latest.json").write_text(json.dumps(raw, indent=1, default=str))
    text_, ok = render_soak(raw)
    write_section("soak", text_)
    write_summary()
    log(f"wrote {RESULTS.relative_to(ROOT)} (raw: {(RAW / 'soak-latest.json').relative_to(ROOT)}); verdict {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def _window_mean(samples: list[dict[str, Any]], key: str, lo: float, hi: float) -> float | None:
    vals = [s[key] for s in samples if lo <= s["t"] <= hi]
    return statistics.fmean(vals) if vals else None


def render_soak(raw: dict[str, Any]) -> tuple[str, bool]:
    samples, segs = raw["samples"], raw["segments"]
    total_s = raw["minutes"] * 60
    errors = sum(s["errors"] for s in segs)
    requests = sum(s["requests"] for s in segs)
    allowed = sum(s["allowed"] for s in segs)
    denied = sum(s["denied"] for s in segs)
    # Second minute vs last minute (the first minute holds start-up and warm-up growth).
    second = _window_mean(samples, "workers_kib", 60.0, 120.0)
    last = _window_mean(samples, "workers_kib", total_s - 60.0, total_s + 30.0)
    growth = None if not second or last is None else (last - second) / second
    flat = growth is not None and abs(growth) <= 0.10
    ledger = raw["ledger"]
    on_ledger = ledger.get("executed", 0) >= allowed and ledger.get("denied", 0) >= denied
    dups = ledger.get("duplicate_action_ids")  # None: a run from before this check
    ok = flat and errors == 0 and on_ledger and not dups
    rps = [s["rps"] for s in segs]
    p99s = [s["p99"] / 1000 for s in segs]
    info = raw["machine"]
    out = [
        "## Soak (`benchmarks/load/soak`)",
        "",
        f"Run {raw['started'][:16].replace('T', ' ')} UTC: {raw['minutes']:g} minutes on PostgreSQL "
        f"(throwaway database), `--workers {raw['workers']}`, C={raw['concurrency']} connections "
        f"(one run each), every {raw['deny_every']}th call a deny, the rest allowed. wrk runs in "
        f"back-to-back {raw['interval_s']:g} s segments; after each, the VmRSS of every server "
        "process is read from `/proc/<pid>/status`.",
        "",
        *_machine_lines(info, raw["postgres"]),
        "",
        f"**Verdict: {'PASS' if ok else 'FAIL'}** — "
        + (f"worker RSS last-minute mean {last / 1024:.1f} MiB vs second-minute mean "
           f"{second / 1024:.1f} MiB: {growth:+.1%} (limit ±10%, {'flat' if flat else 'NOT flat'}); "
           if growth is not None else "not enough samples for the memory verdict; ")
        + f"errors {errors} of {requests:,} calls ({allowed:,} allowed, {denied:,} denied); "
        + ("every answered decision is on the ledger" if on_ledger else "**answered decisions missing from the ledger**")
        + (
            "; action ids were not checked in this run." if dups is None else
            "; action ids unique." if not dups else
            f"; **{dups:,} of {ledger.get('action_requested', 0):,} action ids repeat an earlier "
            "one (run step counters went backwards).**"
        ),
        "",
        f"* Throughput per {raw['interval_s']:g} s segment: median {statistics.median(rps):,.0f}/s, "
        f"min {min(rps):,.0f}/s, max {max(rps):,.0f}/s",
        f"* p99 per segment: median {statistics.median(p99s):.1f} ms, max {max(p99s):.1f} ms; "
        f"p50 median {statistics.median(s['p50'] for s in segs) / 1000:.1f} ms",
        f"* Segments disturbed by another workload (`other` > {NOISY_CORES} cores): "
        f"{sum(1 for s in segs if s['cpu']['other'] > NOISY_CORES)} of {len(segs)}",
        f"* Database after the soak: {raw['db_bytes'] / 1e6:,.0f} MB; ledger: "
        f"{raw['ledger'].get('executed', 0):,} executed, {raw['ledger'].get('denied', 0):,} denied events",
        "",
        "RSS series (MiB; `workers` = sum over the uvicorn worker processes, `all` adds the "
        "supervisor and any other child):",
        "",
        "| t (s) | workers | all | per process | segment calls/s | p99 ms | errors | CPU server / wrk / PG / other |",
        "|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    seg_at = {s["t"]: s for s in segs}
    for s in samples:
        seg = seg_at.get(s["t"])
        per = ", ".join(
            f"{pid}: {v / 1024:.1f}" for pid, v in sorted(s["rss_kib"].items()) if v is not None
        )
        if seg is None:
            seg_cols = "| | | | |"
        else:
            c = seg["cpu"]
            seg_cols = (
                f"| {seg['rps']:,.0f} | {seg['p99'] / 1000:.1f} | {seg['errors']} "
                f"| {_server_cpu(c)} / {c['wrk']:.2f} / {c['pg']:.2f} / {c['other']:.2f} |"
            )
        out.append(
            f"| {s['t']:.0f} | {s['workers_kib'] / 1024:.1f} | {s['all_kib'] / 1024:.1f} | {per} "
            + seg_cols
        )
    out.append("")
    return "\n".join(out), ok


# -- RESULTS.md ----------------------------------------------------------------------------

HEADER = """# Warden HTTP load benchmark: results

Written by `benchmarks/load/run` (throughput and latency) and `benchmarks/load/soak`
(10-minute soak); each replaces only its own section. How to run and what is measured:
[README.md](README.md).
"""


def write_section(name: str, body: str) -> None:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    current = RESULTS.read_text() if RESULTS.exists() else HEADER
    for other in ("load", "soak"):
        if f"<!-- BEGIN {other} -->" not in current:
            current += (
                f"\n<!-- BEGIN {other} -->\n## {other}\n\nNot run yet.\n<!-- END {other} -->\n"
            )
    if begin not in current:
        current = current.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    start, stop = current.index(begin), current.index(end) + len(end)
    RESULTS.write_text(current[:start] + f"{begin}\n{body.rstrip()}\n{end}" + current[stop:])


SUMMARY = ROOT / "benchmarks" / "RESULTS.md"
SUMMARY_BEGIN, SUMMARY_END = "<!-- BEGIN http-load -->", "<!-- END http-load -->"


def render_summary() -> str:
    """The HTTP section of benchmarks/RESULTS.md, from the latest raw load and soak figures."""
    out = [
        "## HTTP load and soak (issue 3)",
        "",
        "Written by `benchmarks/load/run` and `benchmarks/load/soak` from their latest raw "
        "figures (`benchmarks/load/results/`); full tables, machine and method in "
        "[`benchmarks/load/RESULTS.md`](load/RESULTS.md). wrk, the server and PostgreSQL share "
        "the same 2 cores. `benchmarks/run` keeps this section as it is.",
        "",
    ]
    load_file, soak_file = RAW / "load-latest.json", RAW / "soak-latest.json"
    if load_file.exists():
        raw = json.loads(load_file.read_text())
        points = [Point(**p) for p in raw["points"]]
        shown = [p for p in points if p.workers == max(q.workers for q in points)]
        out += [
            f"Load run {raw['started'][:16].replace('T', ' ')} UTC (git {raw['machine']['git']}), "
            f"--workers {shown[0].workers if shown else '?'}:",
            "",
            "| store | path | C | decisions/s | % of bare | p50 ms | p99 ms | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {STORE_LABEL[p.backend]} | {p.path} | {p.conns} "
                f"| {p.rps:,.0f} | {_share(p, shown)} | {_fmt(p.p50_ms)} | {_fmt(p.p99_ms)} | {p.errors} |"
                for p in shown
            ),
            "",
            f"Share of the bare FastAPI/uvicorn endpoint (target >= {TARGET_SHARE_OF_BARE:.0%}): "
            + share_verdict(shown),
            "",
        ]
        checks = raw.get("ledger_checks", {})
        unique = all(c.get("unique_ids", False) for c in checks.values())
        complete = all(c.get("ok", False) for c in checks.values())
        out += [
            f"Target (>= {TARGET_RPS:,.0f} calls/s with p99 <= {TARGET_P99_MS:g} ms on PostgreSQL): "
            + target_verdict(points),
            "",
            "Ledger check after every server: "
            + ("every answered decision is on the ledger" if complete else "**answered decisions missing**")
            + ("; action ids unique." if unique else "; **action ids repeat**."),
            "",
        ]
    else:
        out += ["Load: not run yet.", ""]
    if soak_file.exists():
        text_, _ok = render_soak(json.loads(soak_file.read_text()))
        verdict = [line for line in text_.splitlines() if line.startswith("**Verdict")]
        raw = json.loads(soak_file.read_text())
        out += [
            f"Soak run {raw['started'][:16].replace('T', ' ')} UTC: "
            + (verdict[0] if verdict else "no verdict."),
            "",
        ]
    else:
        out += ["Soak: not run yet.", ""]
    return "\n".join(out)


def write_summary() -> None:
    current = SUMMARY.read_text() if SUMMARY.exists() else ""
    block = f"{SUMMARY_BEGIN}\n{render_summary().rstrip()}\n{SUMMARY_END}"
    if SUMMARY_BEGIN in current and SUMMARY_END in current:
        start, stop = current.index(SUMMARY_BEGIN), current.index(SUMMARY_END) + len(SUMMARY_END)
        current = current[:start] + block + current[stop:]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    SUMMARY.write_text(current)
    log(f"wrote the HTTP section of {SUMMARY.relative_to(ROOT)}")


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    load = sub.add_parser("load", help="throughput and latency at several concurrencies")
    load.add_argument("--quick", action="store_true", help="1 s warm-up + 3 s per point")
    load.add_argument("--no-postgres", action="store_true")
    load.add_argument("--no-sqlite", action="store_true", help="PostgreSQL rows only")
    load.add_argument("--workers", default="1,2", help="comma list [1,2]")
    load.add_argument(
        "--attempts", type=int, default=3,
        help="measure a point up to this many times while another workload disturbs it [3]",
    )
    load.add_argument(
        "--max-wait", type=float, default=300.0,
        help="before each point, wait up to this many s for the machine to be idle [300]",
    )
    load.add_argument("--concurrency", default="1,16,64", help="comma list [1,16,64]")
    load.add_argument("--warmup", type=float, default=5.0, help="seconds [5]")
    load.add_argument("--duration", type=float, default=15.0, help="measured seconds [15]")
    load.add_argument(
        "--bare", action=argparse.BooleanOptionalAction, default=True,
        help="also measure the bare FastAPI/uvicorn endpoint (bare.py), the floor for HTTP [on]",
    )
    load.add_argument("--raw-out", help="write the raw figures here [results/load-latest.json]")
    load.add_argument(
        "--no-report", action="store_true", help="do not touch RESULTS.md (benchmarks/compare)"
    )
    soak = sub.add_parser("soak", help="minutes of steady load on PostgreSQL, RSS sampled")
    soak.add_argument("--minutes", type=float, default=10.0)
    soak.add_argument("--concurrency", type=int, default=32)
    soak.add_argument("--workers", type=int, default=2)
    soak.add_argument("--deny-every", type=int, default=10, help="every k-th call a deny [10]")
    soak.add_argument("--interval", type=float, default=10.0, help="RSS sample period, s [10]")
    sub.add_parser("summary", help="rewrite the HTTP section of benchmarks/RESULTS.md from the latest raw figures")
    args = parser.parse_args()
    if args.cmd == "summary":
        write_summary()
        return 0
    if shutil.which("wrk") is None:
        log("wrk is not installed (benchmarks/load/run installs it: apt-get install -y wrk)")
        return 2
    return cmd_load(args) if args.cmd == "load" else cmd_soak(args)


if __name__ == "__main__":
    sys.exit(main())
