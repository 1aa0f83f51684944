# Markdown table rows of the generated results are kept whole (as in benchmarks/load/bench.py).
# ruff: noqa: E501
"""The model-proxy benchmark (issue 9 §7): Warden's proxy and LiteLLM's, side by side.

    benchmarks/proxy/run [--quick] [--rounds 3] [--duration 8] [--no-race] ...

Starts, on loopback: the fake upstream (``upstream.py``), the project's ``FakeUpstream`` in
its own process (a calibration row), the bare FastAPI endpoints (``bare.py``), ``warden
serve`` on a throwaway PostgreSQL database (budgets on, and once more without budgets as a
diagnostic row) and LiteLLM's proxy (its budgets on). Then, alternating target by target in
rounds: wrk at C = 1, 16, 64 on non-streamed completions, ``loadgen.py stream`` at C = 1
and 16 for the time to first token, and the budget race through two replicas of each
proxy. Writes the section ``model-proxy`` of benchmarks/RESULTS.md and the raw figures to
benchmarks/results/proxy-latest.json. Everything it starts it stops; every database it
creates it drops. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.compare import machine_lines  # noqa: E402
from benchmarks.load import bench as lb  # noqa: E402

PY = sys.executable
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
RAW = ROOT / "benchmarks" / "results" / "proxy-latest.json"
SECTION = "model-proxy"
REDIS = ("127.0.0.1", 6379)
MASTER = "sk-bench-master"
UPSTREAM_KEY = "sk-upstream"
MODEL = "gpt-4o"
RACE_CAP = Decimal("5")
#: issue 9 §7: Warden's added p99 at C=64 at most a third of LiteLLM's
TARGET_RATIO = Decimal(1) / 3
log = lb.log


# -- processes ------------------------------------------------------------------------------


class Proc:
    """A server process in its own session, stopped with its whole group."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        ready_url: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 240,
    ) -> None:
        self.name = name
        self.model_id = ""  # LiteLLM's deployment id, for its Redis keys
        self.log = tempfile.NamedTemporaryFile(
            prefix=f"proxybench_{name}_", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env or lb.clean_env(),
            start_new_session=True,
            cwd=cwd,
        )
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.tail()}")
            try:
                if httpx.get(ready_url, timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{name} never became ready:\n{self.tail()}")
            time.sleep(0.25)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return Path(self.log.name).read_text(errors="replace")[-3000:]
        return ""

    def pids(self) -> list[int]:
        kids = lb._children()
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(kids.get(pid, []))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


def wait_workers(proc: Proc, n: int) -> None:
    """uvicorn answers as soon as one worker is up: wait for all ``n``."""
    deadline = time.time() + 60
    while time.time() < deadline:
        if n == 1 or sum(1 for p in proc.pids() if "spawn_main" in lb._cmdline(p)) >= n:
            return
        time.sleep(0.2)


# -- CPU accounting -------------------------------------------------------------------------


def ticks(pids: list[int]) -> int:
    return lb._proc_ticks(pids)


class Cpu:
    """Cores used over an interval by named groups of processes, wrk (children of this
    process), this benchmark's PostgreSQL processes, and everything else."""

    def __init__(self, groups: dict[str, list[int]], pg: list[int]) -> None:
        self.groups, self.pg = groups, pg
        self.t = time.monotonic()
        self.sys = lb._system_ticks()
        self.g = {k: ticks(v) for k, v in groups.items()}
        self.p = {pid: ticks([pid]) for pid in pg}
        ru = lb.resource.getrusage(lb.resource.RUSAGE_CHILDREN)
        self.kids = ru.ru_utime + ru.ru_stime

    def since(self) -> dict[str, float]:
        wall = time.monotonic() - self.t
        total, idle = lb._system_ticks()
        busy = (total - self.sys[0]) - (idle - self.sys[1])
        all_cores = busy / ((total - self.sys[0]) or 1) * (os.cpu_count() or 1)
        out = {k: (ticks(v) - self.g[k]) / lb.CLK_TCK / wall for k, v in self.groups.items()}
        ru = lb.resource.getrusage(lb.resource.RUSAGE_CHILDREN)
        out["client"] = (ru.ru_utime + ru.ru_stime - self.kids) / wall
        # a backend born during the interval counts whole; one that exited is lost
        out["pg"] = (
            sum(max(0, ticks([p]) - self.p.get(p, 0)) for p in pg_procs()) / lb.CLK_TCK / wall
        )
        out["other"] = max(0.0, all_cores - sum(out.values()))
        out["all"] = all_cores
        return {k: round(v, 2) for k, v in out.items()}


def pg_procs() -> list[int]:
    """Every PostgreSQL process on this machine (the benchmark's databases are the only
    busy ones while it measures; other workloads' backends show up here too)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and lb._cmdline(int(entry.name)).startswith("postgres"):
            out.append(int(entry.name))
    return out


# -- setup ----------------------------------------------------------------------------------


def redis_reachable() -> str | None:
    import socket

    try:
        with socket.create_connection(REDIS, timeout=2) as s:
            s.sendall(b"PING\r\n")
            return None if s.recv(64).startswith(b"+PONG") else "no PONG"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def redis_cmd(*args: str) -> bytes:
    import socket

    with socket.create_connection(REDIS, timeout=5) as s:
        s.sendall((f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode())
        time.sleep(0.05)
        return s.recv(1 << 20)


def redis_forget(model_id: str) -> None:
    """Delete LiteLLM's budget keys of one deployment (this run's; nothing else)."""
    for key in (f"deployment_spend:{model_id}:1d", f"deployment_budget_start_time:{model_id}"):
        with contextlib.suppress(OSError):
            redis_cmd("DEL", key)


def warden_spec(tmp: Path, upstream: str, budgets: str | None, name: str) -> Path:
    spec = (HERE / "spec.yaml.in").read_text().replace("{base_url}", upstream + "/v1")
    if budgets is None:
        spec = spec.replace("budgets:\n{budgets}\n", "")
    else:
        spec = spec.replace("{budgets}", budgets)
    path = tmp / f"{name}.yaml"
    path.write_text(spec)
    return path


def warden_key(store: str) -> str:
    done = subprocess.run(
        [
            lb.warden_bin(),
            "keys",
            "create",
            "--role",
            "agent",
            "--name",
            "bench",
            "--tenant",
            "acme",
            "--agent",
            "bench",
            "--store",
            store,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=lb.clean_env(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"warden keys create: {done.stderr or done.stdout}")
    return done.stdout.strip().splitlines()[-1].strip()


def start_warden(
    name: str, store: str, spec: Path, workers: int, migrate: bool = True
) -> tuple[Proc, str]:
    port = lb.free_port()
    cmd = [
        lb.warden_bin(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--store",
        store,
        "--spec",
        str(spec),
        "--tools",
        f"{HERE / 'tools.py'}:tools",
    ]
    if migrate:
        cmd.append("--migrate")
    env = {**lb.clean_env(), "BENCH_UPSTREAM_KEY": UPSTREAM_KEY}
    url = f"http://127.0.0.1:{port}"
    proc = Proc(name, cmd, url + "/readyz", env=env)
    wait_workers(proc, workers)
    return proc, url


def litellm_config(
    tmp: Path,
    upstream: str,
    budget: float,
    name: str,
    redis: bool,
    deployment: bool,
    global_budget: bool,
) -> Path:
    lines = [
        "model_list:",
        f"  - model_name: {MODEL}",
        "    litellm_params:",
        f"      model: openai/{MODEL}",
        f"      api_base: {upstream}/v1",
        f"      api_key: {UPSTREAM_KEY}",
    ]
    if deployment:
        lines += [f"      max_budget: {budget}", "      budget_duration: 1d"]
    if redis:
        lines += ["router_settings:", f"  redis_host: {REDIS[0]}", f"  redis_port: {REDIS[1]}"]
    if global_budget:
        lines += ["litellm_settings:", f"  max_budget: {budget}"]
    lines += ["general_settings:", f"  master_key: {MASTER}"]
    path = tmp / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def litellm_env() -> dict[str, str]:
    # The cost map shipped in the package (no download at start), no telemetry, quiet logs.
    return {
        **lb.clean_env(),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
    }


def start_litellm(name: str, config: Path, workers: int) -> tuple[Proc, str]:
    port = lb.free_port()
    cmd = [
        str(Path(PY).with_name("litellm")),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]
    url = f"http://127.0.0.1:{port}"
    proc = Proc(name, cmd, url + "/health/readiness", env=litellm_env())
    wait_workers(proc, workers)
    # Its first requests import modules lazily: a few calls before anything is timed.
    with httpx.Client(timeout=60) as c:
        for _ in range(5):
            got = c.post(
                url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {MASTER}"},
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 5,
                },
            )
            proc.model_id = got.headers.get("x-litellm-model-id", "")
    return proc, url


# -- measuring ------------------------------------------------------------------------------


def run_wrk(url: str, path: str, key: str, conns: int, seconds: float, tag: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_KEY": key,
        "BENCH_PATH": path,
        "BENCH_TAG": tag,
        "BENCH_MODEL": MODEL,
    }
    cmd = [
        "wrk",
        "-t",
        str(conns),
        "-c",
        str(conns),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "chat.lua"),
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 120)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            out: dict[str, Any] = json.loads(line[8:])
            out["errors"] = sum(
                out[k]
                for k in (
                    "err_connect",
                    "err_read",
                    "err_write",
                    "err_timeout",
                    "non2xx",
                    "mismatch",
                )
            )
            out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
            return out
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")


def run_stream(
    url: str, key: str, conns: int, seconds: float, warmup: float, tag: str
) -> dict[str, Any]:
    cmd = [
        PY,
        str(HERE / "loadgen.py"),
        "stream",
        "--url",
        url,
        "--key",
        key,
        "--conns",
        str(conns),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--tag",
        tag,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 120)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen stream failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


class Target:
    def __init__(
        self,
        name: str,
        label: str,
        url: str,
        path: str,
        key: str,
        procs: list[Proc],
        stream: bool = True,
    ) -> None:
        self.name, self.label, self.url, self.path, self.key = name, label, url, path, key
        self.procs, self.stream = procs, stream

    def pids(self) -> list[int]:
        return [p for proc in self.procs for p in proc.pids()]


def measure_points(
    targets: list[Target],
    upstream: Proc,
    concs: list[int],
    rounds: int,
    warmup: float,
    duration: float,
    max_wait: float,
) -> list[dict[str, Any]]:
    points = []
    for conns in concs:
        for r in range(rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            for t in order:
                bg = lb.wait_quiet(max_wait)
                tag = f"{t.name}-{conns}-{r}-{uuid.uuid4().hex[:4]}"
                run_wrk(t.url, t.path, t.key, conns, warmup, tag)
                cpu = Cpu({"target": t.pids(), "upstream": upstream.pids()}, pg_procs())
                res = run_wrk(t.url, t.path, t.key, conns, duration, tag)
                usage = cpu.since()
                point = {
                    "kind": "chat",
                    "target": t.name,
                    "conns": conns,
                    "round": r,
                    "rps": res["rps"],
                    "p50_us": res["p50"],
                    "p90_us": res["p90"],
                    "p99_us": res["p99"],
                    "max_us": res["lat_max"],
                    "errors": res["errors"],
                    "requests": res["requests"],
                    "cpu": usage,
                    "background": bg,
                    "first_bad": res["first_bad"],
                    "loadavg": os.getloadavg()[0],
                }
                points.append(point)
                log(
                    f"  chat {t.name:12} C={conns:<3} r{r} {res['rps']:8.1f}/s p50 {res['p50'] / 1000:7.2f} ms"
                    f" p99 {res['p99'] / 1000:8.2f} ms err {res['errors']} cpu {usage} bg {bg}"
                    + (f" first bad: {res['first_bad'][:160]}" if res["first_bad"] else "")
                )
    return points


def measure_streams(
    targets: list[Target],
    upstream: Proc,
    concs: list[int],
    rounds: int,
    warmup: float,
    duration: float,
    max_wait: float,
) -> list[dict[str, Any]]:
    points = []
    targets = [t for t in targets if t.stream]
    for conns in concs:
        for r in range(rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            for t in order:
                bg = lb.wait_quiet(max_wait)
                tag = f"s{t.name}-{conns}-{r}-{uuid.uuid4().hex[:4]}"
                cpu = Cpu({"target": t.pids(), "upstream": upstream.pids()}, pg_procs())
                res = run_stream(t.url + t.path, t.key, conns, duration, warmup, tag)
                usage = cpu.since()
                points.append(
                    {
                        "kind": "stream",
                        "target": t.name,
                        "conns": conns,
                        "round": r,
                        **res,
                        "cpu": usage,
                        "background": bg,
                        "loadavg": os.getloadavg()[0],
                    }
                )
                log(
                    f"  stream {t.name:12} C={conns:<3} r{r} {res['rps']:7.1f}/s TTFT p50 "
                    f"{(res['ttft_p50_us'] or 0) / 1000:7.2f} ms p99 {(res['ttft_p99_us'] or 0) / 1000:7.2f} ms"
                    f" err {res['errors']} bg {bg}"
                    + (f" first bad: {res['first_bad'][:160]}" if res["first_bad"] else "")
                )
    return points


# -- the race -------------------------------------------------------------------------------


def price() -> Any:
    from warden.economics import pricing_for

    return pricing_for("openai", MODEL, None)


def cost_of(row: dict[str, Any]) -> Decimal:
    from warden.economics import Usage

    return price().price(Usage(int(row["input_tokens"] or 0), int(row["output_tokens"] or 0)))


def run_race(urls: list[str], key: str, n: int, tag: str) -> dict[str, Any]:
    cmd = [
        PY,
        str(HERE / "loadgen.py"),
        "race",
        "--key",
        key,
        "--n",
        str(n),
        "--tag",
        tag,
        "--max-tokens",
        "1000",
        "--input-chars",
        "8000",
    ]
    for u in urls:
        cmd += ["--url", u + "/v1/chat/completions"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen race failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def after_race(urls: list[str], key: str, tag: str) -> dict[str, int]:
    """Once the race is over (and LiteLLM's spend had time to reach Redis): 3 more
    requests to each replica, one at a time. A budget that is on refuses them all."""
    time.sleep(2.0)
    statuses: dict[str, int] = {}
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "after the race"}],
        "max_tokens": 10,
    }
    with httpx.Client(timeout=60) as c:
        for url in urls:
            for i in range(3):
                r = c.post(
                    url + "/v1/chat/completions",
                    json=body,
                    headers={
                        "Authorization": f"Bearer {key}",
                        "X-Warden-Conversation": f"{tag}-after-{i}",
                    },
                )
                statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
    return statuses


_LEFT = re.compile(r"has \$([0-9.]+) of \$[0-9.]+ left")
_NEEDS = re.compile(r"needs at least \$([0-9.]+)")


def race_summary(raw: dict[str, Any], cap: Decimal, mode: str) -> dict[str, Any]:
    rows = raw["results"]
    ok = [r for r in rows if r["status"] == 200]
    spent = sum((cost_of(r) for r in ok), Decimal(0))
    refused = [r for r in rows if r["status"] != 200]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    # The cheapest call of the race: its input (the same size in every request) and one
    # output token. Money left at the end beyond it could have paid one more call.
    inputs = [int(r["input_tokens"]) for r in ok if r.get("input_tokens")]
    from warden.economics import Usage

    cheapest = price().price(Usage(min(inputs), 1)) if inputs else None
    wrongly = 0
    for r in refused:
        err = r.get("error") or ""
        left, needs = _LEFT.search(err), _NEEDS.search(err)
        if left and needs and Decimal(left.group(1)) >= Decimal(needs.group(1)):
            wrongly += 1
    left_end = cap - spent
    return {
        "mode": mode,
        "requests": len(rows),
        "ran": len(ok),
        "refused": len(refused),
        "statuses": statuses,
        "spent_usd": str(spent),
        "cap_usd": str(cap),
        "overspend_usd": str(max(Decimal(0), spent - cap)),
        "left_usd": str(max(Decimal(0), left_end)),
        "cheapest_call_usd": str(cheapest) if cheapest else None,
        "refused_with_reported_headroom": wrongly,
        "left_could_pay_a_call": bool(cheapest is not None and left_end >= cheapest and refused),
        "seconds": raw["seconds"],
        "first_refusal": next((r.get("error", "")[:400] for r in refused), ""),
        "p50_ms": statistics.median(r["ms"] for r in ok) if ok else None,
    }


def warden_race(tmp: Path, upstream: str, n: int, workers: int) -> dict[str, Any]:
    budgets = f"  - {{name: race_cap, scope: global, period: calendar_day, usd: {RACE_CAP}}}"
    spec = warden_spec(tmp, upstream, budgets, "warden_race")
    with lb.pg_database() as store:
        key = warden_key(store)
        a, url_a = start_warden("warden-race-a", store, spec, workers)
        try:
            b, url_b = start_warden("warden-race-b", store, spec, workers, migrate=False)
        except BaseException:
            a.stop()
            raise
        try:
            tag = f"wrace-{uuid.uuid4().hex[:6]}"
            raw = run_race([url_a, url_b], key, n, tag)
            after = after_race([url_a, url_b], key, tag)
        finally:
            a.stop()
            b.stop()
        engine = create_engine(store)
        try:
            with engine.connect() as conn:
                spent_db = conn.execute(
                    text("SELECT coalesce(sum(spent_nusd), 0) FROM budget_spend")
                ).scalar()
                holds = conn.execute(text("SELECT count(*) FROM budget_holds")).scalar()
        finally:
            engine.dispose()
    out = race_summary(
        raw, RACE_CAP, f"Warden, 2 x `warden serve --workers {workers}` on one PostgreSQL"
    )
    out["after_race"] = after
    out["spent_in_store_usd"] = str(Decimal(int(spent_db or 0)) / Decimal(10**9))
    out["holds_left"] = int(holds or 0)
    out["raw"] = raw["results"]
    return out


def litellm_race(tmp: Path, upstream: str, n: int, workers: int, mode: str) -> dict[str, Any]:
    deployment, glob = mode == "deployment", mode == "global"
    config = litellm_config(
        tmp,
        upstream,
        float(RACE_CAP),
        f"litellm_race_{mode}",
        redis=deployment,
        deployment=deployment,
        global_budget=glob,
    )
    a, url_a = start_litellm(f"litellm-race-{mode}-a", config, workers)
    try:
        b, url_b = start_litellm(f"litellm-race-{mode}-b", config, workers)
    except BaseException:
        a.stop()
        raise
    model_id = ""
    try:
        with httpx.Client(timeout=30) as c:
            model_id = c.post(
                url_a + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {MASTER}"},
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 1,
                },
            ).headers.get("x-litellm-model-id", "")
        # Budgets start at 0 for the race: forget the warm-up calls' spend.
        if deployment and model_id:
            time.sleep(1.5)
            redis_forget(model_id)
        tag = f"lrace-{uuid.uuid4().hex[:6]}"
        raw = run_race([url_a, url_b], MASTER, n, tag)
        after = after_race([url_a, url_b], MASTER, tag)
    finally:
        a.stop()
        b.stop()
        if deployment and model_id:
            redis_forget(model_id)
    label = {
        "deployment": "LiteLLM, deployment budget (`litellm_params.max_budget`, 1d) shared through Redis, 2 replicas",
        "global": "LiteLLM, proxy-wide `litellm_settings.max_budget`, 2 replicas (not enforced without its database)",
    }[mode]
    out = race_summary(raw, RACE_CAP, label + f", `--num_workers {workers}` each")
    out["after_race"] = after
    out["raw"] = raw["results"]
    if glob:
        # Its warm-up calls (5 per replica, 1 output token each) count against each
        # process's own counter, not the race's: negligible ($0.0001), said for exactness.
        out["note"] = "each replica's counter also holds its 5 warm-up calls (< $0.001)"
    return out


# -- report ---------------------------------------------------------------------------------


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def paired(
    points: list[dict[str, Any]], target: str, conns: int, field: str, base: str = "direct"
) -> float | None:
    """Median over rounds of (target - base), each pair measured in the same round."""
    diffs = []
    for p in points:
        if p["target"] != target or p["conns"] != conns:
            continue
        b = next(
            (
                q
                for q in points
                if q["target"] == base and q["conns"] == conns and q["round"] == p["round"]
            ),
            None,
        )
        if b is not None and p.get(field) is not None and b.get(field) is not None:
            diffs.append(p[field] - b[field])
    return med(diffs)


def fmt_ms(us: float | None) -> str:
    if us is None:
        return "-"
    ms = us / 1000
    return f"{ms:.2f}" if abs(ms) < 10 else f"{ms:.1f}"


def spread(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if len(xs) < 2 or not statistics.median(xs):
        return ""
    return f" (±{(max(xs) - min(xs)) / 2 / statistics.median(xs):.0%})"


def render(raw: dict[str, Any]) -> str:
    labels = raw["labels"]
    pts = raw["chat"]
    streams = raw["stream"]
    concs = raw["concs"]
    names = [t for t in raw["targets"] if any(p["target"] == t for p in pts)]
    info = raw["machine"]
    out = [
        "## Model proxy (issue 9 §7)",
        "",
        f"Written by `{raw['command']}` (`benchmarks/proxy/`, see its README), run "
        f"{raw['started'][:16].replace('T', ' ')} to {raw['finished'][11:16]} UTC"
        + (" with `--quick` (**indicative only**)" if raw["quick"] else "")
        + ". Raw figures: "
        "`benchmarks/results/proxy-latest.json`.",
        "",
        "**Machine**",
        "",
        *machine_lines(None, {"machine": info}),
        f"* Packages: warden {info['packages'].get('warden')} (git {info['git']}, src/ sha256 {info['src_sha256']}), "
        f"litellm {raw['versions'].get('litellm')}, fastapi {info['packages'].get('fastapi')}, "
        f"uvicorn {info['packages'].get('uvicorn')}, uvloop {info['packages'].get('uvloop')}, "
        f"httptools {info['packages'].get('httptools')}, pydantic {info['packages'].get('pydantic')}, "
        f"psycopg {info['packages'].get('psycopg')}; {info['wrk']}",
    ]
    if raw.get("postgres"):
        pg = raw["postgres"]
        out.append(
            f"* PostgreSQL {pg['version']} on the same machine (synchronous_commit={pg['synchronous_commit']}, "
            f"fsync={pg['fsync']}); Redis {raw.get('redis_version', '?')} on the same machine (LiteLLM's shared budget)"
        )
    la = raw["loadavg"]
    bgs = [p["background"] for p in pts + streams]
    others = [p["cpu"]["other"] for p in pts + streams]
    out += [
        f"* **How busy the machine was**: load average {la['start'][0]:.2f} / {la['start'][1]:.2f} / {la['start'][2]:.2f} "
        f"at the start and {la['end'][0]:.2f} / {la['end'][1]:.2f} / {la['end'][2]:.2f} at the end (1 / 5 / 15 min, "
        f"2 cores). Cores used by other workloads in the second before each point: median "
        f"{med(bgs) or 0:.2f}, max {max(bgs or [0]):.2f}; during the points (`other` = all - target - upstream - "
        f"client - PostgreSQL): median {med(others) or 0:.2f}, max {max(others or [0]):.2f}. Each point waited up to "
        f"{raw['max_wait']:g} s for a quiet machine first. Other engineers' test runs share these 2 cores: compare "
        "rows of this run with each other, not with other runs.",
        "",
        "**Method.** Every server runs at the same time on loopback, each with "
        f"{raw['workers']} workers: the fake upstream (`upstream.py`, 1 process), `warden serve` on a throwaway "
        "PostgreSQL database, LiteLLM's proxy (`litellm --num_workers`), the bare FastAPI endpoints (`bare.py`). "
        f"The points alternate: for each C, {raw['rounds']} rounds, each measuring every target once, in an order "
        f"rotated by one each round; each point is {raw['warmup']:g} s of warm-up then {raw['duration']:g} s measured. "
        "wrk (C threads, C keep-alive connections, closed loop) sends non-streamed completions (`max_tokens` 64, "
        "one conversation per connection); `loadgen.py stream` (an asyncio client on raw sockets, in its own "
        "process) sends streamed ones and times the first SSE event. **Added latency** = the proxy's "
        "percentile - the fake upstream's own, called directly in the same round at the same C (median over "
        "rounds of these paired differences). Figures are medians over rounds; ± is half the spread between rounds.",
        "",
        "Budgets on in both: Warden's spec has `budgets: [{name: tenant_daily, scope: tenant, period: calendar_day, "
        "usd: 1000000}]` (every call reserves before and settles after, in PostgreSQL); LiteLLM has a deployment "
        "budget (`litellm_params.max_budget` with `budget_duration: 1d`, its router's budget limiter, spend shared "
        "through Redis) and the proxy-wide `litellm_settings.max_budget` (which LiteLLM does not enforce without its "
        "database). Its key/team/user budgets cannot run here "
        "(below).",
        "",
        "### Non-streamed completions",
        "",
        "| target | C | calls/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors | CPU target / upstream / wrk / PG / other |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for conns in concs:
        for t in names:
            ps = [p for p in pts if p["target"] == t and p["conns"] == conns]
            if not ps:
                continue
            rps = [p["rps"] for p in ps]
            cpu = {
                k: med([p["cpu"].get(k) for p in ps])
                for k in ("target", "upstream", "client", "pg", "other")
            }
            added50 = paired(pts, t, conns, "p50_us") if t != "direct" else None
            added99 = paired(pts, t, conns, "p99_us") if t != "direct" else None
            out.append(
                f"| {labels[t]} | {conns} | {med(rps):,.0f}{spread(rps)} | {fmt_ms(med([p['p50_us'] for p in ps]))} "
                f"| {fmt_ms(med([p['p99_us'] for p in ps]))} | {fmt_ms(added50) if t != 'direct' else '-'} "
                f"| {fmt_ms(added99) if t != 'direct' else '-'} | {sum(p['errors'] for p in ps)} "
                f"| {cpu['target']:.2f} / {cpu['upstream']:.2f} / {cpu['client']:.2f} / {cpu['pg']:.2f} / {cpu['other']:.2f} |"
            )
    out += [
        "",
        "### Streams: time to first token",
        "",
        "| target | C | streams/s | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | added TTFT p99 ms | whole stream p50 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    snames = [t for t in raw["targets"] if any(p["target"] == t for p in streams)]
    for conns in sorted({p["conns"] for p in streams}):
        for t in snames:
            ps = [p for p in streams if p["target"] == t and p["conns"] == conns]
            if not ps:
                continue
            a50 = paired(streams, t, conns, "ttft_p50_us") if t != "direct" else None
            a99 = paired(streams, t, conns, "ttft_p99_us") if t != "direct" else None
            out.append(
                f"| {labels[t]} | {conns} | {med([p['rps'] for p in ps]):,.0f} | {fmt_ms(med([p['ttft_p50_us'] for p in ps]))} "
                f"| {fmt_ms(med([p['ttft_p99_us'] for p in ps]))} | {fmt_ms(a50) if t != 'direct' else '-'} "
                f"| {fmt_ms(a99) if t != 'direct' else '-'} | {fmt_ms(med([p['total_p50_us'] for p in ps]))} "
                f"| {sum(p['errors'] for p in ps)} |"
            )
    # the target
    w99 = paired(pts, "warden", 64, "p99_us")
    l99 = paired(pts, "litellm", 64, "p99_us")
    out += ["", "### Target", ""]
    if w99 is not None and l99 is not None and l99 > 0:
        ratio = w99 / l99
        ok = ratio <= float(TARGET_RATIO)
        out.append(
            f"Warden's added p99 at C=64 ≤ ⅓ of LiteLLM's: Warden {fmt_ms(w99)} ms, LiteLLM {fmt_ms(l99)} ms, "
            f"ratio {ratio:.2f} → **{'PASS' if ok else 'FAIL'}**."
        )
    else:
        out.append("Warden's added p99 at C=64 vs LiteLLM's: not measured in this run.")
    races = raw.get("race") or []
    if races:
        out += [
            "",
            f"### Budget race: {raw['race_n']:,} concurrent priced requests against a ${RACE_CAP} cap, two replicas",
            "",
            "Each request: gpt-4o, ~8,000 characters of input (the fake reports ~2,000 input tokens), `max_tokens` "
            "1,000; the fake upstream waits "
            f"{raw['race_delay_ms']:g} ms and reports a random 1..`max_tokens` output tokens (seeded). All "
            f"{raw['race_n']:,} connections open first, then every request is sent at once, alternating between the "
            "two replicas, each its own conversation. Spend is priced here from the usage each 200 reports "
            "(gpt-4o list price, $2.50 / $10 per million tokens, the same in both proxies' price data).",
            "",
            "| proxy and budget mode | ran | refused | spent | overspend | left at the end | refused with headroom reported ≥ need | seconds | 6 calls after the race |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in races:
            if "skipped" in r:
                out.append(f"| {r['mode']} | - | - | - | - | - | - | not run: {r['skipped']} | - |")
                continue
            mode = r["mode"]
            if mode.startswith("LiteLLM, proxy-wide") and "not enforced" not in mode:
                mode = (
                    mode.replace(" (in process memory)", "")
                    + " (not enforced without its database)"
                )
            out.append(
                f"| {mode} | {r['ran']} | {r['refused']} {r['statuses']} | ${Decimal(r['spent_usd']):.5f} "
                f"| **${Decimal(r['overspend_usd']):.5f}** | ${Decimal(r['left_usd']):.5f} "
                f"| {r.get('refused_with_reported_headroom', '-') if r['mode'].startswith('Warden') else 'n/a'} "
                f"| {r['seconds']:.1f} | {r.get('after_race', '-')} |"
            )
        for r in races:
            if r["mode"].startswith("Warden") and "spent_usd" in r:
                out += [
                    "",
                    f"Warden: spend in the store (`budget_spend`) ${Decimal(r['spent_in_store_usd']):.5f} "
                    f"(priced from the race's replies: ${Decimal(r['spent_usd']):.5f}; the store also holds the 6 calls "
                    "after the race, if they ran); reservations left in "
                    f"`budget_holds`: {r['holds_left']}. The cheapest call of the race costs "
                    f"${Decimal(r['cheapest_call_usd'] or 0):.5f}; "
                    + (
                        "no request was refused."
                        if not r["refused"]
                        else "money left at the end could have paid more calls: every refusal came while in-flight "
                        "calls held their worst case (input bounded by its UTF-8 bytes, about 4 times the tokens the "
                        "fake counts, plus `max_tokens`), so no refusal reported headroom it could have used, but "
                        "what the settles released afterwards went unspent. The 6 calls after the race are small "
                        "(10 output tokens): the money left pays for them."
                        if r["left_could_pay_a_call"]
                        else "what was left at the end could not pay another call."
                    ),
                ]
            if "first_refusal" in r and r.get("first_refusal"):
                out += [
                    "",
                    f"First refusal ({r['mode'].split(',')[0]}): `{r['first_refusal'][:300]}`",
                ]
    by_c = {
        t: [med([p["rps"] for p in pts if p["target"] == t and p["conns"] == c]) for c in concs]
        for t in ("warden", "warden-nobudget", "litellm")
    }
    if all(v and None not in v for v in by_c.values()):
        out += [
            "",
            "### Where Warden's time goes",
            "",
            "Calls/s at C = "
            + " / ".join(str(c) for c in concs)
            + ": Warden with budgets "
            + " / ".join(f"{x:,.0f}" for x in by_c["warden"])
            + ", without budgets "
            + " / ".join(f"{x:,.0f}" for x in by_c["warden-nobudget"])
            + ", LiteLLM "
            + " / ".join(f"{x:,.0f}" for x in by_c["litellm"])
            + ". "
            + (
                "With budgets Warden's rate does not grow with C"
                if by_c["warden"][-1] < 1.3 * by_c["warden"][0]
                else "With budgets Warden's rate grows little with C"
            )
            + ": every call takes the lock of the one tenant counter twice (reserve, then settle), each "
            "time for a durable PostgreSQL transaction, so calls queue on that lock "
            "(`benchmarks/proxy/lockwait.py` samples the waits).",
        ]
    out += ["", "### What could not run here", ""] + [f"* {x}" for x in NOT_RUN]
    if raw.get("notes"):
        out += ["", "### Notes", ""] + [f"* {x}" for x in raw["notes"]]
    return "\n".join(out) + "\n"


def write_section(body: str) -> None:
    begin, end = f"<!-- BEGIN {SECTION} -->", f"<!-- END {SECTION} -->"
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in current and end in current:
        start, stop = current.index(begin), current.index(end) + len(end)
        current = current[:start] + block + current[stop:]
    else:
        # before the before/after section, after the HTTP one
        anchor = "<!-- BEGIN before-after -->"
        if anchor in current:
            at = current.index(anchor)
            current = current[:at] + block + "\n\n" + current[at:]
        else:
            current = current.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(current)


# -- main -----------------------------------------------------------------------------------


NOT_RUN = [
    "**LiteLLM's key, team, user and end-user budgets** (`max_budget` on a virtual key, team or user): they "
    "need LiteLLM's database, which it reaches only through Prisma (`prisma` 0.15.0 from PyPI). `prisma "
    "generate` downloads Prisma's query and schema engines from binaries.prisma.sh (`Error: request to "
    "https://binaries.prisma.sh/.../query-engine.gz.sha256 failed, reason: getaddrinfo ENOTFOUND`), and so does "
    "npm's `@prisma/engines` in its install script; this machine reaches only PyPI, Debian and npm. So the "
    "comparison uses the two LiteLLM budgets that need no database: the deployment budget (router budget "
    "limiter, shared across replicas through Redis), and, to show it, the proxy-wide `max_budget`. LiteLLM "
    "without its database also authenticates only its master key (no virtual keys), so its auth path here is "
    "cheaper than in a deployment with keys.",
    "**LiteLLM's proxy-wide `litellm_settings.max_budget`** is not enforced without its database: LiteLLM "
    'logs at start that the budget "will NOT be enforced and requests will never be blocked" '
    "(`ProxyStartupEvent.warn_budget_without_db`). Its race row is kept to show exactly that (the 6 calls "
    "after the race still pass); the LiteLLM budget that is enforced here is the deployment budget.",
    "**litellm[proxy] in `.venv-bench`**: its `[proxy]` extra needs `cryptography>=49`, AGT (a peer of the "
    "in-process benchmark, in `.venv-bench`) needs `cryptography<49`. The proxy benchmark therefore has its own "
    "venv, `.venv-proxy` (Warden editable with `[postgres]`, and `litellm[proxy]` pinned in "
    "`benchmarks/proxy/requirements.txt`); Warden's own dependencies do not include LiteLLM.",
]


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop servers, drop databases


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round, 1 s warm-up + 3 s points, race of 200"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--stream-concurrency", default="1,16")
    parser.add_argument("--workers", type=int, default=2, help="workers per proxy [2]")
    parser.add_argument(
        "--max-wait", type=float, default=30.0, help="wait up to this for a quiet machine [30]"
    )
    parser.add_argument("--race-n", type=int, default=1000)
    parser.add_argument("--race-delay-ms", type=float, default=300.0)
    parser.add_argument(
        "--race-workers", type=int, default=1, help="workers per replica in the race [1]"
    )
    parser.add_argument("--no-race", action="store_true")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the section from the last raw figures (results/proxy-latest.json), measure nothing",
    )
    args = parser.parse_args()
    if args.render_only:
        write_section(render(json.loads(RAW.read_text())))
        log(
            f"rewrote the {SECTION} section of {RESULTS.relative_to(ROOT)} from {RAW.relative_to(ROOT)}"
        )
        return 0
    if args.quick:
        args.rounds, args.warmup, args.duration, args.race_n = 1, 1.0, 3.0, 200
    concs = [int(x) for x in args.concurrency.split(",")]
    sconcs = [int(x) for x in args.stream_concurrency.split(",") if x]
    if shutil.which("wrk") is None:
        log("wrk is not installed (benchmarks/proxy/run installs it)")
        return 2
    for what, why in (("PostgreSQL", lb.pg_reachable()), ("Redis", redis_reachable())):
        if why:
            log(f"{what} does not answer ({why}): the proxy benchmark needs it")
            return 2
    started = datetime.now(UTC)
    raw: dict[str, Any] = {
        "started": started.isoformat(),
        "command": os.environ.get("WARDEN_BENCH_COMMAND", "benchmarks/proxy/run"),
        "quick": args.quick,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "duration": args.duration,
        "workers": args.workers,
        "max_wait": args.max_wait,
        "concs": concs,
        "machine": lb.machine(),
        "postgres": lb.pg_info(lb.PG_ADMIN_URL),
        "versions": {"litellm": metadata.version("litellm")},
        "loadavg": {"start": list(os.getloadavg())},
        "not_run": list(NOT_RUN),
        "notes": [],
        "chat": [],
        "stream": [],
        "race": [],
        "race_n": args.race_n,
        "race_delay_ms": args.race_delay_ms,
    }
    with contextlib.suppress(Exception):
        info = redis_cmd("INFO", "server").decode()
        raw["redis_version"] = re.search(r"redis_version:(\S+)", info).group(1)  # type: ignore[union-attr]
    labels = {
        "direct": "fake upstream, called directly",
        "fakeupstream": "`warden.testing.FakeUpstream`, called directly (1 process)",
        "bare": "bare FastAPI endpoint (answers itself)",
        "passthrough": "bare FastAPI pass-through (httpx to the fake)",
        "warden": "**Warden** (budgets on)",
        "litellm": "**LiteLLM** (budgets on)",
        "warden-nobudget": "Warden without budgets (diagnostic)",
    }
    raw["labels"] = labels
    order = [
        "direct",
        "fakeupstream",
        "bare",
        "passthrough",
        "warden",
        "warden-nobudget",
        "litellm",
    ]
    raw["targets"] = order
    tmp = Path(tempfile.mkdtemp(prefix="proxybench_"))
    started_procs: list[Proc] = []
    litellm_ids: list[str] = []  # their budget keys in Redis are deleted at the end
    try:
        with contextlib.ExitStack() as stack:
            up_port = lb.free_port()
            upstream = Proc(
                "upstream",
                [PY, str(HERE / "upstream.py"), "--port", str(up_port)],
                f"http://127.0.0.1:{up_port}/healthz",
            )
            started_procs.append(upstream)
            up_url = f"http://127.0.0.1:{up_port}"
            if not args.no_latency:
                targets: list[Target] = [
                    Target(
                        "direct",
                        labels["direct"],
                        up_url,
                        "/v1/chat/completions",
                        "none",
                        [upstream],
                    )
                ]
                port_file = tmp / "fake.port"
                fake = subprocess.Popen(
                    [PY, str(HERE / "fake_launcher.py"), str(port_file)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                deadline = time.time() + 60
                while not port_file.exists() and time.time() < deadline:
                    time.sleep(0.1)
                fake_proc = _Adopted("fakeupstream", fake)
                started_procs.append(fake_proc)  # type: ignore[arg-type]
                fake_url = f"http://127.0.0.1:{port_file.read_text().strip()}"
                targets.append(
                    Target(
                        "fakeupstream",
                        labels["fakeupstream"],
                        fake_url,
                        "/v1/chat/completions",
                        "none",
                        [fake_proc],
                        stream=False,
                    )
                )  # type: ignore[list-item]
                bport = lb.free_port()
                bare = Proc(
                    "bare",
                    [
                        PY,
                        "-m",
                        "uvicorn",
                        "bare:app",
                        "--app-dir",
                        str(HERE),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(bport),
                        "--workers",
                        str(args.workers),
                        "--log-level",
                        "warning",
                    ],
                    f"http://127.0.0.1:{bport}/readyz",
                    env={**lb.clean_env(), "BENCH_UPSTREAM": up_url},
                )
                started_procs.append(bare)
                wait_workers(bare, args.workers)
                burl = f"http://127.0.0.1:{bport}"
                targets.append(
                    Target(
                        "bare",
                        labels["bare"],
                        burl,
                        "/v1/chat/completions",
                        "none",
                        [bare],
                        stream=False,
                    )
                )
                targets.append(
                    Target(
                        "passthrough",
                        labels["passthrough"],
                        burl,
                        "/passthrough/v1/chat/completions",
                        "none",
                        [bare],
                    )
                )
                store = stack.enter_context(lb.pg_database())
                key = warden_key(store)
                spec = warden_spec(
                    tmp,
                    up_url,
                    "  - {name: tenant_daily, scope: tenant, period: calendar_day, usd: 1000000}",
                    "warden",
                )
                wproc, wurl = start_warden("warden", store, spec, args.workers)
                started_procs.append(wproc)
                targets.append(
                    Target("warden", labels["warden"], wurl, "/v1/chat/completions", key, [wproc])
                )
                store2 = stack.enter_context(lb.pg_database())
                key2 = warden_key(store2)
                spec2 = warden_spec(tmp, up_url, None, "warden_nobudget")
                nproc, nurl = start_warden("warden-nobudget", store2, spec2, args.workers)
                started_procs.append(nproc)
                targets.append(
                    Target(
                        "warden-nobudget",
                        labels["warden-nobudget"],
                        nurl,
                        "/v1/chat/completions",
                        key2,
                        [nproc],
                        stream=False,
                    )
                )
                lconf = litellm_config(
                    tmp,
                    up_url,
                    1_000_000.0,
                    "litellm",
                    redis=True,
                    deployment=True,
                    global_budget=True,
                )
                lproc, lurl = start_litellm("litellm", lconf, args.workers)
                started_procs.append(lproc)
                litellm_ids.append(lproc.model_id)
                targets.append(
                    Target(
                        "litellm", labels["litellm"], lurl, "/v1/chat/completions", MASTER, [lproc]
                    )
                )
                log(f"all up: {', '.join(f'{t.name} {t.url}{t.path}' for t in targets)}")
                raw["chat"] = measure_points(
                    targets, upstream, concs, args.rounds, args.warmup, args.duration, args.max_wait
                )
                if sconcs:
                    raw["stream"] = measure_streams(
                        targets,
                        upstream,
                        sconcs,
                        args.rounds,
                        min(2.0, args.warmup),
                        args.duration,
                        args.max_wait,
                    )
                for p in started_procs[1:]:
                    p.stop()
                started_procs = started_procs[:1]
            upstream.stop()
            started_procs = []
        if not args.no_race:
            rport = lb.free_port()
            rup = Proc(
                "upstream-race",
                [
                    PY,
                    str(HERE / "upstream.py"),
                    "--port",
                    str(rport),
                    "--delay-ms",
                    str(args.race_delay_ms),
                    "--random-output",
                    "1000",
                ],
                f"http://127.0.0.1:{rport}/healthz",
            )
            started_procs.append(rup)
            rurl = f"http://127.0.0.1:{rport}"
            for name, fn in (
                ("Warden", lambda: warden_race(tmp, rurl, args.race_n, args.race_workers)),
                (
                    "LiteLLM deployment budget",
                    lambda: litellm_race(tmp, rurl, args.race_n, args.race_workers, "deployment"),
                ),
                (
                    "LiteLLM global max_budget",
                    lambda: litellm_race(tmp, rurl, args.race_n, args.race_workers, "global"),
                ),
            ):
                log(f"race: {name}, {args.race_n} requests")
                lb.wait_quiet(args.max_wait)
                try:
                    res = fn()
                except Exception as exc:  # a mode that fails is reported, not hidden
                    log(f"  {name} failed: {exc}")
                    res = {"mode": name, "skipped": f"{type(exc).__name__}: {str(exc)[:300]}"}
                raw["race"].append(res)
                log(f"  {name}: " + json.dumps({k: v for k, v in res.items() if k != "raw"})[:600])
            rup.stop()
            started_procs = []
    finally:
        for p in started_procs:
            with contextlib.suppress(Exception):
                p.stop()
        for mid in litellm_ids:
            redis_forget(mid)
        shutil.rmtree(tmp, ignore_errors=True)
    raw["finished"] = datetime.now(UTC).isoformat()
    raw["loadavg"]["end"] = list(os.getloadavg())
    RAW.parent.mkdir(parents=True, exist_ok=True)
    RAW.write_text(json.dumps(raw, separators=(",", ":"), default=str))
    write_section(render(raw))
    log(
        f"wrote the {SECTION} section of {RESULTS.relative_to(ROOT)} (raw: {RAW.relative_to(ROOT)})"
    )
    return 0


class _Adopted:
    """A process started here without a ready URL (the FakeUpstream launcher)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.name, self.proc = name, proc

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
