"""PII written outside ``Services.emit`` (docs/pii.md): kill switch changes and
settlements are tokenized before they are stored, and the ledger still verifies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from test_ledger_reconcile import _stuck_write
from typer.testing import CliRunner

from warden.cli._app import app
from warden.ledger import LedgerWriter, iter_events, settle, verify
from warden.pipeline import Scope, SwitchBoard
from warden.store import Store
from warden.store._tables import metadata
from warden.telemetry import Vault
from warden.telemetry._redact import SYSTEM_TENANT, PiiRedactor

ADDRESS = "ada@bank.example"
runner = CliRunner()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    made = Store(store_url)
    yield made
    made.dispose()


def _stored_text(store: Store, url: str) -> str:
    """Every row of every table, as text; on SQLite also the database files' bytes."""
    parts: list[str] = []
    with store.read() as conn:
        for table in metadata.sorted_tables:
            parts.extend(repr(tuple(row)) for row in conn.execute(select(table)))
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        for path in (db, db.with_name(db.name + "-wal")):
            if path.exists():
                parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def test_a_switch_reason_and_author_are_stored_as_tokens(store: Store, store_url: str) -> None:
    result = runner.invoke(
        app,
        ["switch", "on", "global", "--by", "ops@bank.example",
         "--reason", f"mail {ADDRESS}", "--store", store_url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    board = SwitchBoard(store, LedgerWriter(store))
    board.set(Scope.TENANT, "acme", active=True, by="dpo", reason=f"customer {ADDRESS} asked")
    board._ledger.flush()

    stored = _stored_text(store, store_url)
    assert ADDRESS not in stored and "ops@bank.example" not in stored
    vault = Vault(store)
    # the same address, under the key of the tenant the switch belongs to
    system = PiiRedactor(vault.token_key).token(SYSTEM_TENANT, "email", ADDRESS)
    acme = PiiRedactor(vault.token_key).token("acme", "email", ADDRESS)
    assert system != acme
    events = [e for e in iter_events(store) if e.type == "switch_changed"]
    assert [e.payload["reason"] for e in events] == [f"mail {system}", f"customer {acme} asked"]
    switches = {(s.scope, s.target): s for s in board.list()}
    assert switches[(Scope.TENANT, "acme")].reason == f"customer {acme} asked"
    assert switches[(Scope.GLOBAL, "*")].set_by.startswith("pii:email:")
    assert verify(store).ok


def test_a_settlement_note_and_result_are_tokenized_and_sealed(
    store: Store, store_url: str
) -> None:
    action = _stuck_write(store, "run_pii")
    ledger = LedgerWriter(store)
    settle(
        store, ledger, action, outcome="done", note=f"PSP mailed {ADDRESS}",
        by="ops@bank.example", result={"receipt_to": ADDRESS},
    )  # fmt: skip
    ledger.close()

    assert ADDRESS not in _stored_text(store, store_url)
    [event] = [e for e in iter_events(store, run_id="run_pii") if e.type == "reconciled"]
    assert event.payload["note"].startswith("PSP mailed pii:email:")
    assert event.payload["by"].startswith("pii:email:")
    assert event.payload["result"]["receipt_to"].startswith("pii:email:")
    assert verify(store).ok
    # the result a repeat is answered with is sealed with the tenant's key, not lost
    from test_ledger_reconcile import _key

    state, sealed = _key(store, "run_pii") or ("", None)
    assert state == "done" and sealed is not None
    assert json.loads(Vault(store).unseal("t1", sealed)) == {"receipt_to": ADDRESS}


async def test_a_cached_model_reply_is_sealed_and_a_shred_empties_the_cache(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_model_calls import gateway

    from warden.pipeline._models import ChatResult
    from warden.store._tables import model_cache
    from warden.testing import FakeReply, FakeUpstream
    from warden.upstream import Usage

    with FakeUpstream(api_key="sk-upstream") as fake:
        gw = gateway(store_url, fake, monkeypatch)
        fake.push(*(FakeReply(f"write to {ADDRESS} ({i})", usage=Usage(10, 5)) for i in range(2)))

        async def ask() -> ChatResult:
            async with gw.run(tenant="acme", agent="bot", task="t") as run:
                asked = [{"role": "user", "content": "whom do I mail?"}]
                result = await run.chat("small", asked, temperature=0, max_tokens=60)
            assert isinstance(result, ChatResult), result
            return result

        first = await ask()
        again = await ask()
        assert (first.cached, again.cached) == (False, True)
        assert again.text == first.text == f"write to {ADDRESS} (0)"  # the hit still answers
        with gw.store.read() as conn:
            [reply] = conn.execute(select(model_cache.c.reply)).scalars()
        assert reply.startswith("vault:1:") and ADDRESS not in reply
        assert gw.svc.vault is not None
        gw.svc.vault.shred("acme", by="dpo")
        after = await ask()
        assert not after.cached and after.text == f"write to {ADDRESS} (1)"
        assert len(fake.requests) == 2
        await gw.aclose()


async def test_run_identities_are_stored_as_tokens_and_still_compare(
    store_url: str, tmp_path: Path
) -> None:
    from conftest import SPEC, Effects, make_gateway

    from warden import Denied, FailureKind, Pending, UsageError
    from warden.store._tables import approvals, runs

    spec_text = SPEC.replace(
        "on_timeout: escalate", "on_timeout: escalate\n  max_requests_per_end_user_per_day: 2"
    )
    gw = make_gateway(store_url, Effects(), spec_text)
    results = []
    opened = []
    for i in range(3):  # one approval per run, three runs for the same end user
        run = gw.open_run(
            tenant="t", agent="bot", task=f"user run {i}", end_user=ADDRESS,
            opened_by="ops@bank.example",
        )  # fmt: skip
        opened.append(run)
        results.append(
            await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 300.0 + i})
        )
    gw.flush()
    # the per-end-user cap still counts one person across runs
    assert [type(r) for r in results] == [Pending, Pending, Denied]
    assert isinstance(results[2], Denied) and results[2].kind is FailureKind.APPROVAL_LIMIT
    with gw.store.read() as conn:
        rows = conn.execute(select(runs.c.end_user, runs.c.opened_by)).all()
    assert {r.end_user for r in rows} == {gw.svc.pii.token("t", "email", ADDRESS)}  # type: ignore[union-attr]
    assert all(r.opened_by.startswith("pii:email:") for r in rows)
    with gw.store.read() as conn:
        asked_by = conn.execute(select(approvals.c.requested_by)).scalars().all()
    assert asked_by and all(who.startswith("pii:email:") for who in asked_by)
    # whoever opened the run still cannot approve its actions
    first = results[0]
    assert isinstance(first, Pending)
    with pytest.raises(UsageError, match="cannot approve"):
        await gw.approve(
            first.approval_id, approver="ops@bank.example", roles=["lead"], rationale="mine"
        )
    gw.close()
    # a run resumed by another process gives its rules the identities as given
    other = make_gateway(store_url, Effects(), spec_text)
    resumed = other.resume_run(opened[1].run_id)
    assert resumed.state.end_user == ADDRESS and resumed.state.opened_by == "ops@bank.example"
    other.close()
    assert ADDRESS not in _stored_text(gw.store, store_url)
