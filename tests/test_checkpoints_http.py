"""Over HTTP, as with ``warden ledger export``: an export first signs a checkpoint of the
heads that moved, and ``GET /v1/ledger/checkpoints`` gives the file that lets an outsider
verify the export offline (issue 7, section 2: "with every export")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from _stack import Stack

from warden.ledger import (
    generate_key,
    load_public_key,
    read_checkpoint_file,
    read_export,
    verify_export,
)


def test_an_http_export_is_covered_by_a_checkpoint_and_verifies_offline(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    key = tmp_path / "ledger.key"
    generate_key(key)
    # A long period: no periodic checkpoint happens during the test.
    stack = make_stack(ledger_key=str(key), checkpoint_s=3600)
    bot, audit = stack.client("bot"), stack.client("root")  # an all-tenant key
    run = bot.post("/v1/runs", json={"workflow": "shop", "agent": "bot", "task": "t"})
    assert run.status_code == 201, run.text
    run_id = run.json()["run_id"]
    call = {"tool": "get_order", "args": {"order_id": "o1"}}
    r = bot.post(f"/v1/runs/{run_id}/actions", json=call)
    assert r.status_code == 200, r.text

    exported = audit.get("/v1/ledger/export")
    assert exported.status_code == 200, exported.text
    (tmp_path / "export.jsonl").write_text(exported.text)
    signed = audit.get("/v1/ledger/checkpoints")
    assert signed.status_code == 200, signed.text
    (tmp_path / "checkpoints.jsonl").write_text(signed.text)

    checkpoints = read_checkpoint_file(tmp_path / "checkpoints.jsonl")
    events = read_export(tmp_path / "export.jsonl")
    mine = [e for e in events if e["stream"] == run_id]
    assert mine, "the run's events are in the export"
    covered = {h.stream: h.seq for cp in checkpoints for h in cp.heads}
    assert covered.get(run_id) == max(e["seq"] for e in mine)  # up to its last event
    report = verify_export(
        events, checkpoints, public_key=load_public_key(Path(f"{key}.pub"))
    )
    assert report.ok, report.problems


def test_checkpoints_are_for_all_tenant_auditors(make_stack: Callable[..., Stack]) -> None:
    """They name every tenant's runs: not for agents, nor for one tenant's auditor."""
    stack = make_stack()
    for who in ("bot", "audit"):
        r = stack.client(who).get("/v1/ledger/checkpoints")
        assert r.status_code == 403 and r.json()["type"].endswith("forbidden"), (who, r.text)
