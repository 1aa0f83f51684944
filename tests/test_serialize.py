"""``serialize_on``: concurrent partial refunds of one order never exceed what was paid —
in threads, in processes, and across two replicas (issue 7 §1c)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from refund_tools import PAID_CENTS, REFUND_SPEC, SHARE_CENTS, refunded, tools

from warden import Gateway, SyncGateway
from warden.spec import load_spec_text

N = 5
TESTS = Path(__file__).parent


def _check(outcomes: list[str], payments: str) -> None:
    assert refunded(payments) <= PAID_CENTS
    assert outcomes.count("allowed") == PAID_CENTS // SHARE_CENTS == 2
    assert outcomes.count("denied") == N - 2


def test_threads_with_their_own_gateways(store_url: str, tmp_path: Path) -> None:
    payments = str(tmp_path / "payments.db")
    spec = load_spec_text(REFUND_SPEC, "refunds.yaml")
    gateways = [Gateway(spec, tools(payments), store=store_url).sync() for _ in range(N)]
    barrier = threading.Barrier(N)

    def one(sync: SyncGateway) -> str:
        with sync.run(tenant="t", agent="bot", task="refund") as run:
            barrier.wait()
            result = run.call("refund", {"order_id": "o1", "amount": SHARE_CENTS})
        return type(result).__name__.lower()

    try:
        with ThreadPoolExecutor(N) as pool:
            outcomes = list(pool.map(one, gateways))
    finally:
        for sync in gateways:
            sync.close()
    _check(outcomes, payments)


SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    sys.path.insert(0, {tests!r})
    from refund_tools import REFUND_SPEC, SHARE_CENTS, tools
    from warden import Allowed, Gateway
    from warden.spec import load_spec_text

    gw = Gateway(load_spec_text(REFUND_SPEC, "r.yaml"), tools({payments!r}), store={url!r})
    async def main():
        run = gw.open_run(tenant="t", agent="bot", task="refund")
        while time.time() < {start}:
            await asyncio.sleep(0.005)
        r = await run.call("refund", {{"order_id": "o1", "amount": SHARE_CENTS}})
        print(type(r).__name__.lower())
    asyncio.run(main())
    gw.close()
    """
)


def test_processes(store_url: str, tmp_path: Path) -> None:
    import time

    payments = str(tmp_path / "payments.db")
    Gateway(load_spec_text(REFUND_SPEC, "r.yaml"), tools(payments), store=store_url).close()
    script = tmp_path / "refund.py"
    start = time.time() + 3  # every process is ready by then, then all call at once
    script.write_text(
        SCRIPT.format(tests=str(TESTS), payments=payments, url=store_url, start=start)
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(N)
    ]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes.append(out.strip())
    _check(outcomes, payments)


@pytest.mark.postgres
def test_two_replicas(pg_url: str, tmp_path: Path) -> None:
    from _stack import free_port
    from test_replicas import _start, _wait_ready

    from warden.auth import KeyStore
    from warden.store import Store

    payments = str(tmp_path / "payments.db")
    spec = tmp_path / "refunds.yaml"
    spec.write_text(REFUND_SPEC)
    store = Store(pg_url)
    key = KeyStore(store).create(
        name=f"bot-{os.getpid()}-{tmp_path.name}",
        role="agent",
        tenant="acme",
        created_by="tests",
        agent="bot",
    )[1]
    store.dispose()
    # keep an inherited PYTHONPATH (a worktree's src/ run against a shared venv)
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "WARDEN_TEST_PAYMENTS": payments, "PYTHONPATH": path}
    ports = [free_port(), free_port()]
    procs = [
        _start(pg_url, spec, port, env, tools=f"{TESTS / 'refund_tools.py'}:tools")
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            _wait_ready(url, proc)
        headers = {"Authorization": f"Bearer {key}"}
        runs = []
        for i in range(N):
            r = httpx.post(
                urls[i % 2] + "/v1/runs",
                json={"workflow": "refunds", "agent": "bot", "task": "refund"},
                headers=headers,
                timeout=30,
            )
            assert r.status_code == 201, r.text
            runs.append(r.json()["run_id"])
        barrier = threading.Barrier(N)

        def one(i: int) -> Any:
            barrier.wait()
            r = httpx.post(
                f"{urls[i % 2]}/v1/runs/{runs[i]}/actions",
                json={"tool": "refund", "args": {"order_id": "o1", "amount": SHARE_CENTS}},
                headers=headers,
                timeout=60,
            )
            assert r.status_code == 200, r.text
            return r.json()["status"]

        with ThreadPoolExecutor(N) as pool:
            outcomes = list(pool.map(one, range(N)))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    _check(outcomes, payments)


def test_a_serialize_on_that_does_not_compile_is_a_located_spec_error(tmp_path: Path) -> None:
    """Not a raw CelSyntaxError out of the gateway: the file, line and what to fix, with the
    spec's other errors in the same report."""
    from warden.errors import SpecError

    line = next(ln for ln in REFUND_SPEC.splitlines() if "serialize_on" in ln)
    broken = REFUND_SPEC.replace(line, line.replace("args.order_id", "args.order_id +"))
    assert broken != REFUND_SPEC
    with pytest.raises(SpecError) as caught:
        Gateway(
            load_spec_text(broken, "refunds.yaml"),
            tools(tmp_path),
            store=f"sqlite:///{tmp_path / 'w.db'}",
        )
    (issue,) = caught.value.issues
    assert issue.line == REFUND_SPEC.splitlines().index(line) + 1
    assert "serialize_on" in issue.path and "CEL" in issue.message
