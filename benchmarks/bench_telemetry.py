"""Issue 10 §8, telemetry figures: what tracing and metrics cost a governed read, and
how long a ``/metrics`` scrape of a server with 10 workflows and 100 tools takes.

    python -m benchmarks.bench_telemetry            # ~1-2 min on a 2-vCPU VM
    python -m benchmarks.bench_telemetry --quick    # smoke test, figures indicative only

(a) Governed read (``noop``, 20 rules, SQLite), the loop of ``bench_warden``'s
    governed series, on four gateways in one process: telemetry off, traces only,
    metrics only, both. Rounds alternate between them so drift hits all alike; each
    round's median is taken and the median of the rounds reported, with the ratio to off.
    Traces: every span recorded and exported by the batch processor to a no-op exporter
    (so the export thread's work is in the figure, the network is not). Metrics:
    prometheus-client in single-process mode.

(b) ``GET /metrics`` of an app serving 10 workflows of 10 tools each (100 tools), after
    calls to every tool (allowed and denied, so every series exists) and 20 pending
    approvals: in process through ``httpx.ASGITransport`` (single-process mode), and over
    loopback from a real ``warden serve --workers 2`` (multiprocess mode: the answering
    worker merges every worker's files).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from warden import Allowed, Gateway
from warden.telemetry import Metrics, SpanBatcher, instrument

from .bench_warden import governed_gateway, sqlite_store

ROOT = Path(__file__).resolve().parents[1]


class NullExporter(SpanExporter):
    """Takes every span and drops it (counts them, so the figure is known to be real)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


async def _series(gw: Gateway, run: Any, start: int, repeat: int) -> list[int]:
    samples = [0] * repeat
    x = start
    for k in range(repeat):
        x += 1
        t0 = perf_counter_ns()
        res = await run.call("noop", {"x": x})
        samples[k] = perf_counter_ns() - t0
        if not isinstance(res, Allowed):
            raise AssertionError(f"call {x} gave {res!r}")
    return samples


async def _overhead(rounds: int, per_round: int, warmup: int) -> dict[str, Any]:
    modes = ("off", "traces", "metrics", "both")
    exporters: dict[str, NullExporter] = {}
    stacks: dict[str, tuple[Gateway, Any, Any]] = {}
    dirs = []
    for mode in modes:
        ctx = sqlite_store()
        url = ctx.__enter__()
        dirs.append(ctx)
        gw = governed_gateway(20, url)
        telemetry = None
        if mode != "off":
            exporter = exporters[mode] = NullExporter()
            batcher = SpanBatcher(exporter) if mode in ("traces", "both") else None
            metrics = Metrics() if mode in ("metrics", "both") else None
            telemetry = instrument(gw, traces=batcher, metrics=metrics)
        run = gw.open_run(tenant="bench", agent="bench-agent", task=f"bench {mode}")
        # a run spans many calls; max_steps of the bench spec is far above the total
        await _series(gw, run, 0, warmup)
        gw.flush()
        stacks[mode] = (gw, run, telemetry)
    medians: dict[str, list[float]] = {m: [] for m in modes}
    # wall time of a round per call: includes what the export and counting threads took
    # from the loop (the GIL), which a per-call median can miss
    walls: dict[str, list[float]] = {m: [] for m in modes}
    x = warmup
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for mode in modes:
                gw, run, _t = stacks[mode]
                t0 = perf_counter_ns()
                samples = await _series(gw, run, x, per_round)
                walls[mode].append((perf_counter_ns() - t0) / per_round / 1000)
                medians[mode].append(statistics.median(samples) / 1000)
                gw.flush()
            x += per_round
    finally:
        gc.enable()
    spans = {}
    for mode, (gw, run, telemetry) in stacks.items():
        run.finish()
        if telemetry is not None:
            telemetry.close()
        gw.close()
        if mode in exporters:
            spans[mode] = exporters[mode].spans
    for ctx in dirs:
        ctx.__exit__(None, None, None)
    off = statistics.median(medians["off"])
    off_wall = statistics.median(walls["off"])
    out: dict[str, Any] = {"rounds": rounds, "calls_per_round": per_round, "modes": {}}
    for mode in modes:
        median = statistics.median(medians[mode])
        wall = statistics.median(walls[mode])
        out["modes"][mode] = {
            "median_us": round(median, 2),
            "round_medians_us": [round(m, 2) for m in medians[mode]],
            "ratio_to_off": round(median / off, 3),
            "wall_per_call_us": round(wall, 2),
            "wall_ratio_to_off": round(wall / off_wall, 3),
        }
    out["spans_exported"] = {m: spans.get(m, 0) for m in ("traces", "both")}
    return out


# --------------------------------------------------------------------------- (b) scrape

WORKFLOWS, TOOLS = 10, 10


def _spec(i: int) -> str:
    tools = "\n".join(f"  t{j}: {{effect: read, scope: read}}" for j in range(TOOLS))
    return f"""
name: wf{i}
version: "1"
owner: bench@example.com
tier: autonomous
agents:
  bot: {{scopes: [read]}}
tools:
{tools}
policies:
  - name: no_big
    when: args.x > 1000
    effect: deny
    reason: too big
  - name: review_huge
    when: args.x < 0
    effect: require_approval
    reason: negative
    approvers: lead
escalation:
  approver_roles: [lead]
  sla: 1h
"""


async def _tool(x: int) -> int:
    return x


def tools() -> dict[str, Any]:
    """Tool factory of the scrape benchmark's workflows (``--tools file.py:tools``)."""
    return {f"t{j}": _tool for j in range(TOOLS)}


def _write_specs(directory: Path) -> list[str]:
    paths = []
    for i in range(WORKFLOWS):
        path = directory / f"wf{i}.yaml"
        path.write_text(_spec(i))
        paths.append(str(path))
    return paths


async def _populate(client: httpx.AsyncClient) -> None:
    """Calls to every tool of every workflow (allowed and denied) and 20 approvals."""
    for i in range(WORKFLOWS):
        r = await client.post("/v1/runs", json={"workflow": f"wf{i}", "agent": "bot", "task": "b"})
        run_id = r.json()["run_id"]
        for j in range(TOOLS):
            for x in (1, 5000) + ((-1,) if j < 2 else ()):
                r = await client.post(
                    f"/v1/runs/{run_id}/actions", json={"tool": f"t{j}", "args": {"x": x + j}}
                )
                assert r.status_code == 200, r.text


async def _scrape_in_process(directory: Path, repeat: int) -> dict[str, Any]:
    from warden.auth import KeyStore
    from warden.server import ServerSettings, create_app

    specs = _write_specs(directory)
    settings = ServerSettings(
        store=f"sqlite:///{directory / 'w.db'}",
        specs=specs,
        tools=["benchmarks.bench_telemetry:tools"] * len(specs),
        auto_migrate=True,
    )
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    app = create_app(settings)
    key = KeyStore(app.state.warden.store).create(
        name="bot", role="agent", tenant="acme", created_by="bench", agent="bot"
    )[1]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bench",
            headers={"Authorization": f"Bearer {key}"},
        ) as client,
    ):
        await _populate(client)
        return await _time_scrapes(lambda: client.get("/metrics"), repeat)


async def _time_scrapes(get: Any, repeat: int) -> dict[str, Any]:
    for _ in range(3):
        await get()
    samples = []
    size = series = 0
    for _ in range(repeat):
        t0 = perf_counter_ns()
        r = await get()
        samples.append(perf_counter_ns() - t0)
        assert r.status_code == 200, r.text
        size = len(r.content)
        series = sum(1 for line in r.text.splitlines() if line and not line.startswith("#"))
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) / 1e6, 2),
        "max_ms": round(ordered[-1] / 1e6, 2),
        "samples": repeat,
        "bytes": size,
        "series": series,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape_two_workers(directory: Path, repeat: int) -> dict[str, Any]:
    specs = _write_specs(directory)
    store = f"sqlite:///{directory / 'w.db'}"
    port = _free_port()
    cmd = [sys.executable, "-m", "warden", "serve", "--port", str(port), "--workers", "2",
           "--store", store, "--migrate"]  # fmt: skip
    for spec in specs:
        cmd += ["--spec", spec, "--tools", "benchmarks.bench_telemetry:tools"]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    # the workers import this module for the tool factory
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"server did not start: {server.stderr and server.stderr.read().decode()}"
                )
            time.sleep(0.2)
        made = subprocess.run(
            [sys.executable, "-m", "warden", "keys", "create", "--role", "agent", "--name", "bot",
             "--tenant", "acme", "--agent", "bot", "--store", store],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        key = made.stdout.strip().splitlines()[-1]
        return asyncio.run(_populate_and_scrape(url, key, repeat))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


async def _populate_and_scrape(url: str, key: str, repeat: int) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        await _populate(client)
        await asyncio.sleep(1)  # both workers counted their calls

        async def get() -> httpx.Response:
            # a connection per scrape, so both workers answer some of them
            return await client.get("/metrics", headers={"Connection": "close"})

        return await _time_scrapes(get, repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (indicative only)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    rounds, per_round, warmup, scrapes = (4, 1000, 300, 10) if args.quick else (10, 3000, 1000, 50)
    out: dict[str, Any] = {}
    print(f"(a) governed read, telemetry off/on: {rounds} rounds x {per_round} calls", flush=True)
    out["governed_read"] = asyncio.run(_overhead(rounds, per_round, warmup))
    with tempfile.TemporaryDirectory(prefix="warden-bench-tel-") as tmp:
        print(f"(b) /metrics of {WORKFLOWS} workflows x {TOOLS} tools, in process", flush=True)
        out["scrape_in_process"] = asyncio.run(_scrape_in_process(Path(tmp), scrapes))
    with tempfile.TemporaryDirectory(prefix="warden-bench-tel-") as tmp:
        print("(b) /metrics of warden serve --workers 2, over loopback", flush=True)
        out["scrape_two_workers"] = _scrape_two_workers(Path(tmp), scrapes)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    read = out["governed_read"]["modes"]
    print("\ngoverned read (noop, 20 rules, SQLite), median of round medians; wall per call:")
    for mode, row in read.items():
        print(
            f"  {mode:<8} {row['median_us']:8.2f} us  x{row['ratio_to_off']:.3f}   "
            f"wall {row['wall_per_call_us']:8.2f} us  x{row['wall_ratio_to_off']:.3f}"
        )
    print(f"  spans exported: {out['governed_read']['spans_exported']}")
    for name in ("scrape_in_process", "scrape_two_workers"):
        row = out[name]
        print(
            f"{name}: median {row['median_ms']} ms, max {row['max_ms']} ms, "
            f"{row['series']} samples, {row['bytes']} bytes ({row['samples']} scrapes)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
