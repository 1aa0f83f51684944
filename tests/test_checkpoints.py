"""Signed checkpoints and the offline verifier: ``warden ledger keygen / checkpoint /
export / verify --export --checkpoints``, and the server's checkpoint loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from warden import Gateway
from warden.ledger import (
    checkpoint_loop,
    generate_key,
    load_private_key,
    read_checkpoint_file,
    stored_checkpoints,
    verify,
)
from warden.ledger._canonical import canonical_json
from warden.ledger._chain import GENESIS, event_hash

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    from warden.cli._app import app

    done = runner.invoke(app, list(args))
    return done.exit_code, done.output


async def _record(gateway: Gateway, tenant: str) -> str:
    async with gateway.run(tenant=tenant, agent="bot", task="export me") as run:
        await run.call("save", {"key": "k", "value": 1})
        await run.call("get_doc", {"doc_id": "d1"})
    gateway.flush()
    return run.run_id


async def test_export_verifies_offline_and_a_rewritten_export_does_not(
    gateway: Gateway, tmp_path: Path
) -> None:
    key = tmp_path / "ledger.key"
    code, text = cli("ledger", "keygen", "--out", str(key))
    assert code == 0, text
    gateway.switches.set("tenant", "t2", active=True, by="ops", reason="drill")
    run_id = await _record(gateway, "t1")
    await _record(gateway, "t2")
    export = tmp_path / "events.jsonl"
    code, text = cli(
        "ledger", "export", "--store", gateway.store.url, "--out", str(export), "--key", str(key)
    )
    assert code == 0, text
    checkpoints = tmp_path / "events.jsonl.checkpoints"
    assert len(read_checkpoint_file(checkpoints)) == 1
    offline = ("ledger", "verify", "--export", str(export), "--checkpoints", str(checkpoints))
    code, text = cli(*offline, "--public-key", f"{key}.pub")
    assert code == 0, text
    assert "ledger verified" in text and "pinned" in text

    # A consistent rewrite of one run inside the export file: hashes recomputed.
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    prev = GENESIS
    for event in (e for e in lines if e["stream"] == run_id):
        if event["type"] == "executed":
            event["payload"]["result"] = {"forged": True}
        event["prev_hash"] = prev
        event["hash"] = prev = event_hash(
            stream=event["stream"],
            seq=event["seq"],
            tenant=event["tenant"],
            run_id=event["run_id"],
            ts=event["ts"],
            type=event["type"],
            payload=canonical_json(event["payload"]),
            prev_hash=prev,
        )
    export.write_text("".join(json.dumps(e) + "\n" for e in lines))
    code, text = cli(*offline, "--public-key", f"{key}.pub")
    assert code == 1
    assert "rewritten" in text and run_id in text


async def test_tenant_export_verifies_offline(gateway: Gateway, tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    for tenant in ("t1", "t2"):
        gateway.switches.set("tenant", tenant, active=True, by="ops", reason="drill")
        await _record(gateway, tenant)
    export = tmp_path / "t1.jsonl"
    code, text = cli(
        "ledger", "export", "--store", gateway.store.url, "--tenant", "t1",
        "--out", str(export), "--key", str(tmp_path / "k"),
    )  # fmt: skip
    assert code == 0, text
    code, text = cli(
        "ledger", "verify", "--export", str(export), "--tenant", "t1",
        "--checkpoints", f"{export}.checkpoints", "--public-key", str(tmp_path / "k.pub"),
    )  # fmt: skip
    assert code == 0, text


async def test_checkpoint_file_signed_by_another_key_is_refused(
    gateway: Gateway, tmp_path: Path
) -> None:
    generate_key(tmp_path / "mine")
    generate_key(tmp_path / "forger")
    await _record(gateway, "t1")
    cps = tmp_path / "cps"
    code, text = cli(
        "ledger", "checkpoint", "--store", gateway.store.url,
        "--key", str(tmp_path / "forger"), "--out", str(cps),
    )  # fmt: skip
    assert code == 0, text
    code, text = cli(
        "ledger", "verify", "--store", gateway.store.url, "--checkpoints", str(cps),
        "--public-key", str(tmp_path / "mine.pub"),
    )  # fmt: skip
    assert code == 1 and "checkpoint" in text


async def test_checkpoint_file_keeps_what_it_holds(gateway: Gateway, tmp_path: Path) -> None:
    """The outsider's file is appended to, never rewritten: a store that lost its old
    checkpoints cannot make the file forget them."""
    generate_key(tmp_path / "k")
    await _record(gateway, "t1")
    cps = tmp_path / "cps"
    for _ in range(2):
        code, text = cli(
            "ledger", "checkpoint", "--store", gateway.store.url,
            "--key", str(tmp_path / "k"), "--out", str(cps),
        )  # fmt: skip
        assert code == 0, text
    before = cps.read_text()
    assert [c.n for c in read_checkpoint_file(cps)] == [1, 2]
    code, _ = cli(
        "ledger", "checkpoint", "--store", gateway.store.url,
        "--key", str(tmp_path / "k"), "--out", str(cps),
    )  # fmt: skip
    assert cps.read_text().startswith(before)


def test_key_commands_fail_with_one_line(tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    code, text = cli("ledger", "keygen", "--out", str(tmp_path / "k"))
    assert code == 1 and "exists" in text
    (tmp_path / "junk").write_text("not a key")
    code, text = cli(
        "ledger", "checkpoint", "--store", f"sqlite:///{tmp_path / 'x.db'}",
        "--key", str(tmp_path / "junk"),
    )  # fmt: skip
    assert code == 1 and "Traceback" not in text
    code, text = cli(
        "ledger", "verify", "--export", str(tmp_path / "junk"), "--checkpoints",
        str(tmp_path / "junk"),
    )  # fmt: skip
    assert code == 1 and "Traceback" not in text


async def test_checkpoint_loop_signs_moved_heads(gateway: Gateway, tmp_path: Path) -> None:
    private, public = generate_key(tmp_path / "k")
    await _record(gateway, "t1")
    stop = asyncio.Event()
    task = asyncio.create_task(
        checkpoint_loop(gateway.store, load_private_key(private), 0.01, stop=stop)
    )
    while not stored_checkpoints(gateway.store):
        await asyncio.sleep(0.01)
    stop.set()
    await task
    from warden.ledger import load_public_key

    report = verify(gateway.store, public_key=load_public_key(public))
    assert report.ok, report.problems
    assert report.checkpoints >= 1
