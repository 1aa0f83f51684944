"""The ``warden`` command, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "refund_triage" / "workflow.yaml"


def warden(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warden", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_validate_ok(tmp_path: Path) -> None:
    done = warden("validate", str(EXAMPLE), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "refund_triage" in done.stdout


def test_validate_prints_lint_warnings_without_failing(tmp_path: Path) -> None:
    """A write tool no rule mentions is worth a look, not an error."""
    done = warden("validate", str(EXAMPLE), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warning" in done.stderr and "'escalate_to_human'" in done.stderr
    assert "not mentioned by any rule" in done.stderr


def test_validate_warns_where_an_autonomous_workflow_has_no_threshold(tmp_path: Path) -> None:
    """Without an allow rule, every refund of the autonomous demo would go to approval:
    legal, probably not meant, so a warning (exit code 0)."""
    text = EXAMPLE.read_text()
    start = text.index("  - name: refunds_up_to_100_run_alone")
    end = text.index("  - name: messages_run_alone")
    (tmp_path / "no_threshold.yaml").write_text(text[:start] + text[end:])
    done = warden("validate", "no_threshold.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warned = [ln for ln in done.stderr.splitlines() if "no rule allows money tool" in ln]
    assert len(warned) == 1 and "'issue_refund'" in warned[0], done.stderr


def test_validate_reports_each_error_with_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = (
        EXAMPLE.read_text()
        .replace("tier: autonomous", "tier: yolo")
        .replace("args.amount > 100.0", "args.amount >> 100.0")
    )
    broken.write_text(text)
    done = warden("validate", str(broken), cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    tier_line = text.splitlines().index("tier: yolo") + 1
    assert any(
        f"broken.yaml:{tier_line}: tier: invalid value" in ln and "found 'yolo'" in ln
        for ln in lines
    )
    assert any("policies[0].when: CEL:" in ln for ln in lines)
    assert "Traceback" not in done.stderr


def test_validate_missing_file_is_one_line(tmp_path: Path) -> None:
    done = warden("validate", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert done.returncode == 1 and "cannot read the file" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("demo")
    done = warden("demo", "--tickets", "60", "--quiet", cwd=cwd)
    assert done.returncode == 0, done.stderr
    (cwd / "demo.out").write_text(done.stdout)
    return cwd


def test_demo_summary_and_verified_ledger(demo_dir: Path) -> None:
    out = (demo_dir / "demo.out").read_text()
    for heading in (
        "Policy decisions",
        "Blocks by rule",
        "Approvals",
        "Failures and refusals by",
        "ledger verified",
    ):
        assert heading in out
    assert "warden ledger show run_" in out
    assert (demo_dir / ".warden" / "warden.db").exists()


def _printed(pattern: str, out: str) -> str:
    found = re.search(pattern, " ".join(out.split()))  # the console wraps long lines
    assert found is not None, f"{pattern!r} not in the demo's output:\n{out}"
    return found[1]


def test_demo_economics_are_the_ledgers(demo_dir: Path) -> None:
    """The summary's spend, cost per successful ticket, escalations, budget blocks and
    cache hits are what the ledger's events add up to, and each of them happened."""
    from warden.ledger import iter_events
    from warden.store import Store

    store = Store(f"sqlite:///{demo_dir / '.warden' / 'warden.db'}")
    try:
        events = list(iter_events(store))
    finally:
        store.dispose()
    usage = [e for e in events if e.type == "usage"]
    tools_of = {
        e.payload["action_id"]: e.payload["tool"] for e in events if e.type == "action_requested"
    }
    executed = [e for e in events if e.type == "executed"]
    spend = sum(Decimal(e.payload["cost_usd"]) for e in usage) + sum(
        Decimal(e.payload["cost_usd"]) for e in executed if e.payload.get("cost_usd")
    )
    per_run: defaultdict[str | None, Decimal] = defaultdict(Decimal)
    for e in usage:
        per_run[e.run_id] += Decimal(e.payload["cost_usd"])
    completed = {
        e.run_id for e in events if e.type == "run_finished" and e.payload["outcome"] == "completed"
    }
    successful = {
        e.run_id
        for e in executed
        if e.run_id in completed
        and tools_of[e.payload["action_id"]]
        in {"issue_refund", "send_message", "escalate_to_human"}
    }
    blocks = [e for e in events if e.type == "denied" and e.payload["kind"] == "budget_exceeded"]
    hits = [e for e in usage if e.payload["cached"]]
    escalations = [e for e in usage if e.payload["routed"] and e.payload["model"] == "large"]
    assert blocks and hits and escalations and successful

    out = (demo_dir / "demo.out").read_text()
    assert "Spend, from the ledger" in out
    total = Decimal(_printed(r"│ total │.*?\$([0-9.]+)", out))
    assert total == spend.quantize(Decimal("0.000001"))
    per_success = Decimal(_printed(r"Cost per successful ticket: \$([0-9.]+)", out))
    assert per_success == (spend / len(successful)).quantize(Decimal("0.000001"))
    assert int(_printed(r"Budget blocks: (\d+) model calls refused", out)) == len(blocks)
    assert int(_printed(r"Cache hits: (\d+) model calls", out)) == len(hits)
    assert int(_printed(r"Escalations to the large model: (\d+)", out)) == len(escalations)
    # a cache hit costs nothing and says what it saved; no run spent past its $0.03 cap
    assert all(e.payload["cost_usd"] == "0" and Decimal(e.payload["saved_usd"]) > 0 for e in hits)
    assert max(per_run.values()) <= Decimal("0.03")
    # the models were the declared ones, priced from the shipped data, not the spec
    assert {e.payload["route"]["model"] for e in usage} == {"gpt-4o-mini", "claude-sonnet-4-5"}
    assert all(e.payload["priced_by"].startswith("genai-prices") for e in usage)


def test_demo_approvals_are_decided_and_executed_not_cancelled(demo_dir: Path) -> None:
    from warden.ledger import iter_events
    from warden.store import Store

    store = Store(f"sqlite:///{demo_dir / '.warden' / 'warden.db'}")
    try:
        kinds = Counter(e.type for e in iter_events(store))
    finally:
        store.dispose()
    assert kinds["approval_requested"] > 0
    assert kinds["approval_decided"] == kinds["approval_requested"]
    assert kinds["action_resumed"] > 0 and kinds["approval_cancelled"] == 0


def test_ledger_commands_on_the_demo_store(demo_dir: Path) -> None:
    verify = warden("ledger", "verify", cwd=demo_dir)
    assert verify.returncode == 0 and "ledger verified" in verify.stdout
    run_id = (demo_dir / "demo.out").read_text().split("warden ledger show ")[1].split()[0]
    show = warden("ledger", "show", run_id, cwd=demo_dir)
    assert show.returncode == 0, show.stderr
    assert "run_started" in show.stdout and "run_finished" in show.stdout
    export = warden("ledger", "export", "--out", "events.jsonl", cwd=demo_dir)
    assert export.returncode == 0
    first = json.loads((demo_dir / "events.jsonl").read_text().splitlines()[0])
    assert first["seq"] >= 1 and len(first["hash"]) == 64
    missing = warden("ledger", "show", "run_doesnotexist", cwd=demo_dir)
    assert missing.returncode == 1 and "no events" in missing.stderr


def test_ledger_verify_fails_on_tampering(tmp_path: Path) -> None:
    import shutil
    import sqlite3

    # Work on a copy so the other tests keep a clean demo store.
    done = warden("demo", "--tickets", "5", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    db = tmp_path / ".warden" / "warden.db"
    shutil.copy(db, tmp_path / "backup.db")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE ledger_events SET payload = '{\"forged\":1}' WHERE id = 7")
    verify = warden("ledger", "verify", cwd=tmp_path)
    assert verify.returncode == 1
    assert (
        "ledger tampered" in verify.stderr and "edited" in verify.stderr and "seq" in verify.stderr
    )


def test_switch_commands(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 's.db'}"
    on = warden(
        "switch",
        "on",
        "tool",
        "issue_refund",
        "--by",
        "ops@x",
        "--reason",
        "incident",
        "--store",
        store,
        cwd=tmp_path,
    )
    assert on.returncode == 0, on.stderr
    assert "ON" in on.stdout
    listed = warden("switch", "list", "--store", store, cwd=tmp_path)
    assert "issue_refund" in listed.stdout and "incident" in listed.stdout
    no_reason = warden("switch", "on", "global", "--by", "ops@x", "--store", store, cwd=tmp_path)
    assert no_reason.returncode == 1 and "reason" in no_reason.stderr
    bad_scope = warden("switch", "on", "galaxy", "--store", store, cwd=tmp_path)
    assert bad_scope.returncode == 2


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    done = warden("ledger", "verify", cwd=tmp_path)
    assert done.returncode == 1 and "no store" in done.stderr and "warden demo" in done.stderr


def test_help_describes_the_commands(tmp_path: Path) -> None:
    done = warden("--help", cwd=tmp_path)
    for command in ("validate", "demo", "switch", "ledger"):
        assert command in done.stdout
