"""Writes whose intent is durable but whose outcome never got written (hole 1l): listed by
``warden ledger unsettled``, settled by ``warden ledger settle``, which records a
``reconciled`` event and settles the idempotency key in the same transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from warden.errors import ConflictError, NotFoundError, UsageError
from warden.ledger import LedgerWriter, iter_events, settle, unsettled, verify
from warden.store import Store
from warden.store._tables import idempotency, runs
from warden.telemetry import Vault

runner = CliRunner()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    made = Store(store_url)
    yield made
    made.dispose()


def _stuck_write(store: Store, run_id: str, *, key_state: str = "started") -> str:
    """The state a store outage between intent and outcome leaves: the run, its request and
    intent on the ledger, its key claimed, and no outcome."""
    action = f"{run_id}.1"
    ledger = LedgerWriter(store)
    now = datetime.now(UTC)
    with ledger.transaction() as conn:
        conn.execute(
            insert(runs).values(
                run_id=run_id, tenant="t1", workflow="shop", workflow_version="1",
                spec_fingerprint="f" * 64, agent="bot", task="pay", tier="autonomous",
                status="running", started_at=now, steps=1,
            )
        )  # fmt: skip
        conn.execute(
            insert(idempotency).values(
                tenant="t1", key=f"key-{run_id}", run_id=run_id, action_id=action,
                tool="pay", state=key_state, result=None, created_at=now,
            )
        )  # fmt: skip
        ledger.append(run_id, "t1", run_id, "run_started", {"workflow": "shop"})
        ledger.append(
            run_id, "t1", run_id, "action_requested",
            {"action_id": action, "tool": "pay", "args": {"amount": 5}, "step": 1},
        )  # fmt: skip
        ledger.append(
            run_id, "t1", run_id, "intent",
            {"action_id": action, "tool": "pay", "args": {"amount": 5},
             "idempotency_key": f"key-{run_id}"},
        )  # fmt: skip
        if key_state == "unknown":
            ledger.append(
                run_id, "t1", run_id, "failed",
                {"action_id": action, "kind": "timeout", "detail": "no answer"},
            )  # fmt: skip
    ledger.close()
    return action


def _key(store: Store, run_id: str) -> tuple[str, str | None] | None:
    with store.read() as conn:
        row = conn.execute(
            select(idempotency.c.state, idempotency.c.result).where(
                idempotency.c.key == f"key-{run_id}"
            )
        ).first()
    if row is None:
        return None
    # stored sealed with the tenant's key (docs/pii.md)
    return row.state, None if row.result is None else Vault(store).unseal("t1", row.result)


def test_an_intent_without_outcome_is_listed_and_settled_as_done(store: Store) -> None:
    action = _stuck_write(store, "run_a")
    [item] = unsettled(store)
    assert (item.action_id, item.reason, item.key_state, item.tool) == (
        action, "no_outcome", "started", "pay",
    )  # fmt: skip
    ledger = LedgerWriter(store)
    settle(
        store, ledger, action, outcome="done", note="PSP shows charge ch_1", by="ops",
        result={"paid": 5},
    )  # fmt: skip
    ledger.close()
    assert unsettled(store) == []
    assert _key(store, "run_a") == ("done", '{"paid":5}')
    last = list(iter_events(store, run_id="run_a"))[-1]
    assert last.type == "reconciled"
    assert last.payload["settled_as"] == "done" and last.payload["by"] == "ops"
    assert verify(store).ok


def test_settled_as_not_executed_releases_the_key(store: Store) -> None:
    action = _stuck_write(store, "run_b")
    ledger = LedgerWriter(store)
    settle(store, ledger, action, outcome="not-executed", note="no charge at PSP", by="ops")
    ledger.close()
    assert _key(store, "run_b") is None  # a corrected retry may run
    assert unsettled(store) == []


def test_a_key_left_unknown_is_listed_and_settled(store: Store) -> None:
    action = _stuck_write(store, "run_c", key_state="unknown")
    [item] = unsettled(store)
    assert (item.action_id, item.reason) == (action, "outcome_unknown")
    ledger = LedgerWriter(store)
    settle(store, ledger, action, outcome="done", note="charged", by="ops", result=None)
    ledger.close()
    assert _key(store, "run_c") == ("done", "null")
    assert unsettled(store) == []


def test_settling_twice_or_an_unknown_action_is_refused(store: Store) -> None:
    action = _stuck_write(store, "run_d")
    ledger = LedgerWriter(store)
    try:
        settle(store, ledger, action, outcome="not-executed", note="checked", by="ops")
        with pytest.raises(ConflictError):
            settle(store, ledger, action, outcome="done", note="again", by="ops")
        with pytest.raises(NotFoundError):
            settle(store, ledger, "run_zzz.1", outcome="done", note="x", by="ops")
        with pytest.raises(UsageError):
            settle(store, ledger, action, outcome="done", note=" ", by="ops")
    finally:
        ledger.close()


def test_unsettled_and_settle_commands(store: Store) -> None:
    from warden.cli._app import app

    action = _stuck_write(store, "run_e")
    _stuck_write(store, "run_f")
    done = runner.invoke(app, ["ledger", "unsettled", "--store", store.url, "--json"])
    assert done.exit_code == 0, done.output
    listed = [json.loads(line) for line in done.output.splitlines()]
    assert {item["action_id"] for item in listed} == {action, "run_f.1"}
    done = runner.invoke(
        app,
        ["ledger", "settle", action, "--as", "done", "--note", "seen at PSP",
         "--result", '{"paid": 5}', "--by", "ops", "--store", store.url],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert _key(store, "run_e") == ("done", '{"paid":5}')
    done = runner.invoke(
        app, ["ledger", "unsettled", "--store", store.url, "--json", "--tenant", "t1"]
    )
    assert [json.loads(line)["action_id"] for line in done.output.splitlines()] == ["run_f.1"]
    bad = runner.invoke(
        app,
        ["ledger", "settle", "run_f.1", "--as", "maybe", "--note", "x", "--store", store.url],
    )
    assert bad.exit_code == 1 and "done or not-executed" in bad.output
    bad = runner.invoke(
        app,
        ["ledger", "settle", "run_f.1", "--as", "done", "--note", "x", "--result", "{oops",
         "--store", store.url],
    )  # fmt: skip
    assert bad.exit_code == 1 and "not JSON" in bad.output
