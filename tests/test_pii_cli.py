"""``warden vault``: reveal (recorded), reads, shred; errors are one line and exit 1."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from warden.cli._vault import vault_app
from warden.store import Store
from warden.telemetry import PiiRedactor, Vault


def _kept(url: str) -> str:
    store = Store(url)
    try:
        vault = Vault(store)
        token: str = PiiRedactor(vault.token_key, keep=vault.keep).redact_text("acme", "sam@shop.example")
    finally:
        store.dispose()
    return token


def test_reveal_reads_and_shred(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    token = _kept(url)
    cli = CliRunner()

    shown = cli.invoke(
        vault_app,
        ["reveal", token, "--tenant", "acme", "--reader", "ann", "--purpose", "case 7", "--store", url],
    )
    assert shown.exit_code == 0 and shown.stdout == "sam@shop.example\n"
    reads = cli.invoke(vault_app, ["reads", "--tenant", "acme", "--json", "--store", url])
    assert reads.exit_code == 0
    rows = [json.loads(line) for line in reads.stdout.splitlines()]
    assert [(r["ref"], r["reader"], r["purpose"]) for r in rows] == [(token, "ann", "case 7")]

    refused = cli.invoke(vault_app, ["shred", "--tenant", "acme", "--by", "dpo", "--store", url])
    assert refused.exit_code == 1 and "--yes" in refused.stderr
    shred = cli.invoke(
        vault_app, ["shred", "--tenant", "acme", "--by", "dpo", "--yes", "--json", "--store", url]
    )
    assert shred.exit_code == 0
    assert json.loads(shred.stdout) == {"tenant": "acme", "generations": 1, "values": 1}

    gone = cli.invoke(
        vault_app,
        ["reveal", token, "--tenant", "acme", "--reader", "ann", "--purpose", "again", "--store", url],
    )
    assert gone.exit_code == 1 and "no raw value kept" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1


def test_keygen_prints_a_usable_master_key() -> None:
    done = CliRunner().invoke(vault_app, ["keygen"])
    from warden.telemetry import master_key

    assert done.exit_code == 0 and len(master_key({"WARDEN_VAULT_KEY": done.stdout.strip()})) == 32
