"""From a clean directory: `warden serve` on the embedded default serves the demo
workflow, and an agent in another process uses it through the remote SDK."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _stack import free_port

EXAMPLE = Path(__file__).parents[1] / "examples" / "refund_triage"


def test_serve_demo_with_a_remote_agent_process(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.communicate()[1]
            assert time.time() < deadline, "server not ready"
            time.sleep(0.1)
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "warden",
                "keys",
                "create",
                "--role",
                "agent",
                "--name",
                "bot",
                "--tenant",
                "acme",
                "--agent",
                "refund-bot",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        agent = subprocess.run(
            [sys.executable, str(EXAMPLE / "remote_agent.py"), "--url", url, "--api-key", key],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert agent.returncode == 0, agent.stderr
        lines = agent.stdout.splitlines()
        assert any("issue_refund" in ln and "allowed" in ln for ln in lines if "small_refund" in ln)
        assert any("issue_refund" in ln and "pending" in ln for ln in lines if "large_refund" in ln)
        assert any("unknown_tool" in ln and "denied unknown_tool" in ln for ln in lines)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
