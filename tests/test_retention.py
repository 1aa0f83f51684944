"""Retention: ``warden ledger archive`` (signed, encrypted, pruned, the rest still
verifying), ``warden ledger verify --archive``, and ``warden store prune``."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from warden import Gateway
from warden.errors import UsageError
from warden.ledger import _archive as archive_module
from warden.ledger import (
    archive,
    generate_key,
    iter_events,
    load_private_key,
    take_checkpoint,
    verify,
    verify_archive,
)
from warden.ledger._checkpoint import Head
from warden.store import Store
from warden.store._retention import RetentionSettings, prune, prune_loop
from warden.store._tables import (
    idempotency,
    ledger_events,
    outbox,
    runs,
    webhook_deliveries,
    window_entries,
)

runner = CliRunner()
SECRET = "correct horse battery staple, but longer"


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    from warden.cli._app import app

    done = runner.invoke(app, list(args), env=env)
    return done.exit_code, done.output


async def _record(gateway: Gateway, tenant: str, n: int = 2) -> str:
    async with gateway.run(tenant=tenant, agent="bot", task="keep me") as run:
        for i in range(n):
            await run.call("save", {"key": f"k{i}", "value": i})
    gateway.flush()
    return run.run_id


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.key"
    generate_key(path)
    return path


async def _old_and_new(gateway: Gateway) -> tuple[list[str], list[str], datetime]:
    """Two runs and a switch change, the cut time, then two more runs."""
    gateway.switches.set("tenant", "t2", active=True, by="ops", reason="drill")
    gateway.flush()
    old = [await _record(gateway, "t1"), await _record(gateway, "t2")]
    cut = datetime.now(UTC)
    new = [await _record(gateway, "t1"), await _record(gateway, "t2")]
    return old, new, cut


async def test_archive_prunes_what_it_archived_and_the_store_still_verifies(
    gateway: Gateway, tmp_path: Path, key: Path
) -> None:
    signing = load_private_key(key)
    take_checkpoint(gateway.store, signing)  # heads signed before the cut are archived too
    old, new, cut = await _old_and_new(gateway)
    before = {e.id for e in iter_events(gateway.store)}
    out = tmp_path / "2026.archive"
    done = archive(
        gateway.store, before=cut, out=out, key=signing, secret=SECRET, secret_ref="env:S"
    )
    after = {e.id for e in iter_events(gateway.store)}
    assert done.pruned == done.events == len(before - after) > 0
    assert {e.stream for e in iter_events(gateway.store)} >= set(new)
    assert not [e for e in iter_events(gateway.store) if e.stream in old]
    assert sorted(c.stream for c in done.cuts) == sorted([*old, "switches"])
    # The store verifies: against its checkpoints, against a pinned key, and by the CLI.
    report = verify(gateway.store, public_key=signing.public_key())
    assert report.ok, report.first
    assert report.events == len(after)
    code, text = cli("ledger", "verify", "--store", gateway.store.url, "--public-key", f"{key}.pub")
    assert code == 0, text
    assert "ledger verified" in text
    # The archive verifies offline and holds exactly what left the store.
    checked = verify_archive(out, SECRET, public_key=signing.public_key())
    assert checked.ok, checked.problems
    assert (checked.events, checked.streams) == (len(before - after), len(done.cuts))
    code, text = cli(
        "ledger", "verify", "--archive", str(out), "--public-key", f"{key}.pub",
        "--secret", "env:ARCHIVE_SECRET", env={"ARCHIVE_SECRET": SECRET},
    )  # fmt: skip
    assert code == 0, text
    assert "archive verified" in text and "pinned" in text


async def test_an_archive_whose_bytes_changed_fails_verification(
    gateway: Gateway, tmp_path: Path, key: Path
) -> None:
    signing = load_private_key(key)
    _old, _new, cut = await _old_and_new(gateway)
    out = tmp_path / "a.archive"
    archive(gateway.store, before=cut, out=out, key=signing, secret=SECRET, secret_ref="env:S")
    header, signature, sealed = out.read_bytes().split(b"\n")[:3]
    raw = bytearray(base64.b64decode(sealed))
    raw[len(raw) // 2] ^= 0x01
    flipped = tmp_path / "flipped.archive"
    flipped.write_bytes(b"\n".join([header, signature, base64.b64encode(bytes(raw)), b""]))
    report = verify_archive(flipped, SECRET)
    assert {p.kind for p in report.problems} == {"edited"}
    assert len(report.problems) == 2  # the signature, and AES-GCM's tag
    # the header (the cut it claims) changed: the signature and the decryption fail
    forged = json.loads(header)
    forged["before"] = "2099-01-01T00:00:00.000000Z"
    bad_header = tmp_path / "header.archive"
    bad_header.write_bytes(
        b"\n".join([json.dumps(forged).encode(), signature, sealed, b""])
    )
    assert not verify_archive(bad_header, SECRET).ok
    assert not verify_archive(out, "not the secret it was written with").ok
    code, text = cli(
        "ledger", "verify", "--archive", str(flipped), "--secret", "env:ARCHIVE_SECRET",
        env={"ARCHIVE_SECRET": SECRET},
    )  # fmt: skip
    assert code == 1
    assert "archive tampered" in text


async def test_tampering_with_what_is_left_is_still_detected(
    gateway: Gateway, tmp_path: Path, key: Path
) -> None:
    signing = load_private_key(key)
    _old, new, cut = await _old_and_new(gateway)
    archive(
        gateway.store, before=cut, out=tmp_path / "a", key=signing, secret=SECRET,
        secret_ref="env:S",
    )  # fmt: skip
    take_checkpoint(gateway.store, signing)
    with gateway.store.write() as conn:
        conn.execute(
            ledger_events.update()
            .where(ledger_events.c.stream == new[0], ledger_events.c.seq == 2)
            .values(payload='{"forged":true}')
        )
    report = verify(gateway.store, public_key=signing.public_key())
    assert [(p.kind, p.stream, p.seq) for p in report.problems][:1] == [("edited", new[0], 2)]


async def test_a_cut_signed_by_another_key_does_not_excuse_a_deletion(
    gateway: Gateway, tmp_path: Path, key: Path
) -> None:
    signing = load_private_key(key)
    old, _new, _cut = await _old_and_new(gateway)
    take_checkpoint(gateway.store, signing)
    # The archive command refuses to run with another key than the store's checkpoints'.
    generate_key(tmp_path / "forger.key")
    forger = load_private_key(tmp_path / "forger.key")
    with pytest.raises(UsageError, match="signed by key"):
        archive(
            gateway.store, before=datetime.now(UTC), out=tmp_path / "f", key=forger,
            secret=SECRET, secret_ref="env:S",
        )  # fmt: skip
    # A forger with the database but not the key signs a cut of their own and deletes.
    last = max(e.seq for e in iter_events(gateway.store, run_id=old[0]))
    head = next(e for e in iter_events(gateway.store, run_id=old[0]) if e.seq == last)
    take_checkpoint(gateway.store, forger, cuts=[Head(old[0], "t1", last, head.hash)])
    with gateway.store.write() as conn:
        conn.execute(ledger_events.delete().where(ledger_events.c.stream == old[0]))
    report = verify(gateway.store, public_key=signing.public_key())
    found = {(p.kind, p.stream) for p in report.problems}
    assert ("checkpoint", "checkpoints") in found and ("deleted", old[0]) in found, found


async def test_an_interrupted_archive_verifies_and_the_next_one_prunes_it(
    gateway: Gateway, tmp_path: Path, key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signing = load_private_key(key)
    old, _new, cut = await _old_and_new(gateway)
    real = archive_module._prune

    def crash(store: Store, cuts: list[Any], tenant: str | None) -> int:
        if cuts:
            raise RuntimeError("power cut")
        return real(store, cuts, tenant)

    monkeypatch.setattr(archive_module, "_prune", crash)
    with pytest.raises(RuntimeError):
        archive(
            gateway.store, before=cut, out=tmp_path / "1", key=signing, secret=SECRET,
            secret_ref="env:S",
        )  # fmt: skip
    monkeypatch.setattr(archive_module, "_prune", real)
    assert [e for e in iter_events(gateway.store) if e.stream == old[0]]  # not pruned yet
    report = verify(gateway.store, public_key=signing.public_key())
    assert report.ok, report.first
    again = archive(
        gateway.store, before=cut, out=tmp_path / "2", key=signing, secret=SECRET,
        secret_ref="env:S",
    )  # fmt: skip
    assert again.checkpoint is None and again.pruned > 0
    assert not (tmp_path / "2").exists()
    assert not [e for e in iter_events(gateway.store) if e.stream in old]
    assert verify(gateway.store, public_key=signing.public_key()).ok
    assert verify_archive(tmp_path / "1", SECRET).ok


async def test_a_tenant_archive_takes_only_that_tenant_and_never_the_shared_stream(
    gateway: Gateway, tmp_path: Path, key: Path
) -> None:
    signing = load_private_key(key)
    old, _new, cut = await _old_and_new(gateway)
    done = archive(
        gateway.store, before=cut, out=tmp_path / "t1", key=signing, secret=SECRET,
        secret_ref="env:S", tenant="t1",
    )  # fmt: skip
    assert [c.stream for c in done.cuts] == [old[0]]
    streams = {e.stream for e in iter_events(gateway.store)}
    assert old[1] in streams and "switches" in streams and old[0] not in streams
    assert verify(gateway.store, tenant="t1", public_key=signing.public_key()).ok
    assert verify(gateway.store, public_key=signing.public_key()).ok


async def test_export_after_an_archive_verifies_offline(
    gateway: Gateway, tmp_path: Path, key: Path
) -> None:
    _old, _new, cut = await _old_and_new(gateway)
    code, text = cli(
        "ledger", "archive", "--store", gateway.store.url, "--before",
        cut.isoformat().replace("+00:00", "Z"), "--out", str(tmp_path / "a.archive"),
        "--key", str(key), "--secret", "env:ARCHIVE_SECRET",
        env={"ARCHIVE_SECRET": SECRET},
    )  # fmt: skip
    assert code == 0, text
    assert "archived" in text
    export = tmp_path / "events.jsonl"
    code, text = cli(
        "ledger", "export", "--store", gateway.store.url, "--out", str(export), "--key", str(key)
    )
    assert code == 0, text
    code, text = cli(
        "ledger", "verify", "--export", str(export), "--checkpoints", f"{export}.checkpoints",
        "--public-key", f"{key}.pub",
    )  # fmt: skip
    assert code == 0, text


def test_archive_refuses_bad_input_with_one_line(tmp_path: Path, key: Path) -> None:
    store = f"sqlite:///{tmp_path / 'w.db'}"
    Store(store).dispose()
    base = ("ledger", "archive", "--store", store, "--key", str(key), "--out", str(tmp_path / "a"))
    env = {"ARCHIVE_SECRET": SECRET}
    for extra, message in [
        (("--before", "last tuesday", "--secret", "env:ARCHIVE_SECRET"), "--before"),
        (("--before", "2026-01-01T00:00:00", "--secret", "env:ARCHIVE_SECRET"), "offset"),
        (("--before", "30d", "--secret", "hmac:X"), "env:NAME or file:NAME"),
        (("--before", "30d", "--secret", "env:MISSING"), "MISSING is not set"),
    ]:
        code, text = cli(*base, *extra, env=env)
        assert code == 1, text
        assert message in text
        assert len(text.strip().splitlines()) == 1, text


async def test_archive_by_retention_class(gateway: Gateway, tmp_path: Path, key: Path) -> None:
    await _record(gateway, "t1")
    await _record(gateway, "t2")
    retention = {"tenants": {"t2": "incident"}, "archive_secret": "env:ARCHIVE_SECRET"}
    code, text = cli(
        "ledger", "archive", "--store", gateway.store.url, "--retention", "--out-dir",
        str(tmp_path / "arch"), "--key", str(key),
        env={"ARCHIVE_SECRET": SECRET, "WARDEN_RETENTION": json.dumps(retention)},
    )  # fmt: skip
    assert code == 0, text
    assert "t1: class staging keeps its full ledger" in text
    assert "t2 (class incident): nothing to archive" in text  # nothing is 90 days old


# -- warden store prune ----------------------------------------------------------------


def test_prune_deletes_only_what_is_past_its_use(store_url: str) -> None:
    store = Store(store_url)
    now = datetime.now(UTC)
    long_ago, lately = now - timedelta(days=60), now - timedelta(hours=1)

    def us(t: datetime) -> int:
        return int(t.timestamp() * 1_000_000)

    try:
        with store.write() as conn:
            for run_id, status in (("r-done", "finished"), ("r-open", "running")):
                conn.execute(insert(runs).values(
                    run_id=run_id, tenant="t", workflow="w", workflow_version="1",
                    spec_fingerprint="f", agent="a", task="t", tier="autonomous",
                    status=status, started_at=long_ago,
                ))  # fmt: skip
            for key_, run_id, state, at in [
                ("old-done", "r-done", "done", long_ago),  # goes
                ("old-unknown", "r-done", "unknown", long_ago),  # waits for a human
                ("old-started", "r-done", "started", long_ago),
                ("open-run", "r-open", "done", long_ago),  # its run may still retry
                ("recent", "r-done", "done", lately),
            ]:
                conn.execute(insert(idempotency).values(
                    tenant="t", key=key_, run_id=run_id, action_id=f"{key_}.1", tool="save",
                    state=state, created_at=at,
                ))  # fmt: skip
            for state, at in [
                ("delivered", long_ago), ("failed", long_ago), ("pending", long_ago),
                ("delivered", lately),
            ]:  # fmt: skip
                made = conn.execute(insert(outbox).values(
                    tenant="t", kind="k", payload="{}", state=state, attempts=1,
                    next_attempt_at=at, created_at=at,
                )).inserted_primary_key  # fmt: skip
                assert made is not None
                oid = made[0]
                conn.execute(insert(webhook_deliveries).values(
                    outbox_id=oid, url="https://x.example", attempt=1, status_code=200,
                    duration_ms=1.0, at=at,
                ))  # fmt: skip
            for at in (long_ago, lately):
                conn.execute(insert(window_entries).values(
                    tenant="t", window_name="w", group_key="g", ts_us=us(at), value=1.0,
                    action_id="a", void=False,
                ))  # fmt: skip
        settings = RetentionSettings()
        dry = prune(store, settings, dry_run=True)
        assert dry.to_json() == {
            "window_entries": 1, "idempotency": 1, "outbox": 2, "webhook_deliveries": 2,
            "rate_counters": 0, "model_cache": 0,
        }  # fmt: skip
        assert prune(store, settings) == dry  # the dry run deleted nothing
        with store.read() as conn:
            keys = sorted(k for (k,) in conn.execute(select(idempotency.c.key)))
            states = sorted(s for (s,) in conn.execute(select(outbox.c.state)))
            deliveries = conn.execute(select(func.count()).select_from(webhook_deliveries))
            windows = conn.execute(select(func.count()).select_from(window_entries))
            assert keys == ["old-started", "old-unknown", "open-run", "recent"]
            assert states == ["delivered", "pending"]
            assert (deliveries.scalar_one(), windows.scalar_one()) == (2, 1)
        # a window longer than the default keeps its entries
        assert prune(store, settings, window_keep=timedelta(days=90)).window_entries == 0
    finally:
        store.dispose()


def test_store_prune_cli_reports_counts_as_json(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'w.db'}"
    Store(store).dispose()
    code, text = cli("store", "prune", "--store", store, "--json", "--dry-run")
    assert code == 0, text
    assert json.loads(text) == {
        "dry_run": True, "window_entries": 0, "idempotency": 0, "outbox": 0,
        "webhook_deliveries": 0, "rate_counters": 0, "model_cache": 0,
    }  # fmt: skip


async def test_the_server_loop_prunes_and_stops(store_url: str) -> None:
    store = Store(store_url)
    old = datetime.now(UTC) - timedelta(days=60)
    try:
        with store.write() as conn:
            conn.execute(insert(window_entries).values(
                tenant="t", window_name="w", group_key="g", ts_us=int(old.timestamp() * 1e6),
                value=1.0, action_id="a", void=False,
            ))  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(
            prune_loop(store, RetentionSettings(prune_every_s=0.05), stop=stop)
        )
        for _ in range(200):
            await asyncio.sleep(0.05)
            with store.read() as conn:
                left = conn.execute(select(func.count()).select_from(window_entries)).scalar_one()
            if left == 0:
                break
        stop.set()
        await asyncio.wait_for(task, 10)
        assert left == 0
    finally:
        store.dispose()


async def test_unarchive_gives_back_exactly_what_left_the_store(
    gateway: Gateway, tmp_path: Path, key: Path
) -> None:
    signing = load_private_key(key)
    _old, _new, cut = await _old_and_new(gateway)
    before = {e.id: e.to_json() for e in iter_events(gateway.store)}
    out = tmp_path / "a.archive"
    archive(gateway.store, before=cut, out=out, key=signing, secret=SECRET, secret_ref="env:S")
    gone = {i: e for i, e in before.items() if i not in {e.id for e in iter_events(gateway.store)}}
    env = {"ARCHIVE_SECRET": SECRET}
    opened = tmp_path / "opened.jsonl"
    code, text = cli(
        "ledger", "unarchive", str(out), "--out", str(opened), "--public-key", f"{key}.pub",
        "--secret", "env:ARCHIVE_SECRET", env=env,
    )  # fmt: skip
    assert code == 0, text
    events = [json.loads(line) for line in opened.read_text().splitlines()]
    assert {e["id"]: e for e in events} == gone
    # a changed archive is not opened
    data = bytearray(out.read_bytes())
    data[-10] = ord("A") if data[-10] != ord("A") else ord("B")
    (tmp_path / "bad.archive").write_bytes(bytes(data))
    code, text = cli(
        "ledger", "unarchive", str(tmp_path / "bad.archive"), "--out", str(tmp_path / "x"),
        "--secret", "env:ARCHIVE_SECRET", env=env,
    )  # fmt: skip
    assert code == 1 and "archive tampered" in text
    assert not (tmp_path / "x").exists()
