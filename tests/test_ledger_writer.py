"""The ledger writer: input that cannot be recorded is refused at once, and nothing one
event does can jam the ledger for the others (hole 1h)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Effects, make_gateway
from sqlalchemy import text

from warden.errors import InvalidInputError
from warden.ledger import LedgerWriter, iter_events, verify
from warden.results import Allowed
from warden.store import Store


async def test_lone_surrogate_does_not_jam_the_ledger(store_url: str, effects: Effects) -> None:
    gw = make_gateway(store_url, effects)
    try:
        async with gw.run(tenant="t-bad", agent="bot", task="surrogate") as bad_run:
            try:
                bad: Any = await bad_run.call("save", {"key": "\ud800", "value": 1})
            except InvalidInputError as exc:  # a 400 for this request alone
                bad = exc
            assert not isinstance(bad, Allowed)
            assert effects.saved == []  # the write was not executed
            # The same run, and every other tenant, go on being recorded.
            assert isinstance(await bad_run.call("save", {"key": "fine", "value": 2}), Allowed)
        async with gw.run(tenant="t-good", agent="bot", task="after") as run:
            assert isinstance(await run.call("get_order", {"order_id": "o1"}), Allowed)
            assert isinstance(await run.call("save", {"key": "k", "value": 3}), Allowed)
        gw.flush()
        types = [e.type for e in iter_events(gw.store, run_id=run.run_id)]
        assert types[0] == "run_started" and types[-1] == "run_finished"
        assert types.count("executed") == 2
        later = [e.type for e in iter_events(gw.store, run_id=bad_run.run_id)]
        assert "run_finished" in later and "executed" in later
        report = verify(gw.store)
        assert report.ok, report.problems
    finally:
        gw.close()


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"args": {"key": "\ud800"}}, "args.key"),
        ({"items": ["ok", {"x": "a\udfffb"}]}, "items[1].x"),
        ({"bad\ud800key": 1}, "bad"),
    ],
)
def test_append_refuses_what_cannot_be_encoded_and_names_it(
    store_url: str, payload: dict[str, Any], where: str
) -> None:
    store = Store(store_url)
    ledger = LedgerWriter(store)
    try:
        with pytest.raises(InvalidInputError) as caught:
            ledger.append("run_x", "t1", "run_x", "action_requested", payload)
        assert where in str(caught.value)
        ledger.append("run_x", "t1", "run_x", "action_requested", {"args": {"key": "ok"}})
        ledger.flush()
        assert [e.payload for e in iter_events(store, run_id="run_x")] == [{"args": {"key": "ok"}}]
    finally:
        ledger.close()
        store.dispose()


@pytest.mark.parametrize(
    ("field", "value"),
    [("tenant", "t\ud800"), ("tenant", "x" * 500), ("run_id", "r" * 200), ("type", "t\x00")],
)
def test_append_refuses_bad_envelope_fields(store_url: str, field: str, value: str) -> None:
    store = Store(store_url)
    ledger = LedgerWriter(store)
    fields = {"stream": "run_y", "tenant": "t1", "run_id": "run_y", "type": "decision"}
    fields[field] = value
    try:
        with pytest.raises(InvalidInputError):
            ledger.append(
                fields["stream"], fields["tenant"], fields["run_id"], fields["type"], {"a": 1}
            )
        ledger.append("run_y", "t1", "run_y", "decision", {"a": 2})
        ledger.flush()
        assert verify(store).ok
    finally:
        ledger.close()
        store.dispose()


def test_a_batch_the_store_rejects_does_not_wedge_the_writer(store_url: str) -> None:
    """An event the store refuses (here: a trigger rejecting one payload) is replaced by an
    ``unrecordable`` marker in its place; the events around it are written, in order, on
    the same chain."""
    store = Store(store_url)
    with store.write() as conn:
        if store.is_sqlite:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON ledger_events"
                    ' WHEN NEW.payload LIKE \'%"n":"poison"%\''
                    " BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN"
                    " IF NEW.payload LIKE '%\"n\":\"poison\"%' THEN RAISE EXCEPTION 'poison refused';"
                    " END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON ledger_events"
                    " FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                )
            )
    ledger = LedgerWriter(store)
    try:
        ledger.append("run_z", "t1", "run_z", "a", {"n": 1})
        ledger.append("run_z", "t1", "run_z", "b", {"n": "poison"})
        ledger.append("run_other", "t2", "run_other", "a", {"n": 3})
        ledger.append("run_z", "t1", "run_z", "c", {"n": 4})
        ledger.flush()
        # Later writes, in a caller's transaction too, are not held up by the refused one.
        with ledger.transaction():
            ledger.append("run_z", "t1", "run_z", "d", {"n": 5})
        assert [e.type for e in iter_events(store, run_id="run_z")] == [
            "a",
            "unrecordable",
            "c",
            "d",
        ]
        marker = list(iter_events(store, run_id="run_z"))[1]
        assert marker.payload["type"] == "b" and "poison refused" in marker.payload["error"]
        assert [e.type for e in iter_events(store, run_id="run_other")] == ["a"]
        report = verify(store)
        assert report.ok, report.problems
    finally:
        ledger.close()
        with store.write() as conn:
            conn.execute(
                text(
                    "DROP TRIGGER refuse_poison" + ("" if store.is_sqlite else " ON ledger_events")
                )
            )
            if not store.is_sqlite:
                conn.execute(text("DROP FUNCTION refuse_poison()"))
        store.dispose()


def test_a_transaction_that_meets_a_refused_event_does_not_pass_it_on(store_url: str) -> None:
    store = Store(store_url)
    with store.write() as conn:
        if store.is_sqlite:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON ledger_events"
                    " WHEN NEW.type = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN"
                    " IF NEW.type = 'poison' THEN RAISE EXCEPTION 'refused'; END IF;"
                    " RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON ledger_events"
                    " FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                )
            )
    ledger = LedgerWriter(store)
    try:
        ledger.append("run_p", "t1", "run_p", "poison", {"n": 1})
        with pytest.raises(Exception), ledger.transaction():  # noqa: B017 (the driver's own error)
            ledger.append("run_q", "t2", "run_q", "intent", {"n": 2})
        with ledger.transaction():
            ledger.append("run_q", "t2", "run_q", "executed", {"n": 3})
        assert [e.type for e in iter_events(store, run_id="run_p")] == ["unrecordable"]
        assert [e.type for e in iter_events(store, run_id="run_q")] == ["intent", "executed"]
        assert verify(store).ok
    finally:
        ledger.close()
        with store.write() as conn:
            conn.execute(
                text(
                    "DROP TRIGGER refuse_poison" + ("" if store.is_sqlite else " ON ledger_events")
                )
            )
            if not store.is_sqlite:
                conn.execute(text("DROP FUNCTION refuse_poison()"))
        store.dispose()


def test_deferred_statements_commit_with_the_next_batch(store_url: str) -> None:
    """``defer``: the statement runs in the transaction that writes the events buffered
    before it, and its callback only once that committed."""
    store = Store(store_url)
    ledger = LedgerWriter(store, max_age_s=60)  # no background flush during the test
    seen: list[str] = []
    try:
        with store.write() as conn:
            conn.execute(text("CREATE TABLE deferred_probe (note VARCHAR(20))"))
        ledger.append("run_d", "t1", "run_d", "a", {"n": 1})
        ledger.defer(
            lambda conn: conn.execute(text("INSERT INTO deferred_probe VALUES ('written')")),
            after=lambda: seen.append("after"),
        )
        with store.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM deferred_probe")).scalar() == 0
        assert seen == []
        with ledger.transaction():  # a caller's transaction carries the batch, as a flush does
            pass
        assert seen == ["after"]
        with store.read() as conn:
            assert conn.execute(text("SELECT note FROM deferred_probe")).scalars().all() == [
                "written"
            ]
        assert [e.type for e in iter_events(store, run_id="run_d")] == ["a"]
    finally:
        ledger.close()
        with store.write() as conn:
            conn.execute(text("DROP TABLE deferred_probe"))
        store.dispose()


def test_a_deferred_statement_that_keeps_failing_is_given_up_not_the_events(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(store_url)
    ledger = LedgerWriter(store, max_age_s=60)
    seen: list[str] = []
    try:
        ledger.append("run_e", "t1", "run_e", "a", {"n": 1})
        ledger.defer(
            lambda conn: conn.execute(text("INSERT INTO no_such_table VALUES (1)")),
            after=lambda: seen.append("after"),
        )
        ledger.append("run_e", "t1", "run_e", "b", {"n": 2})
        ledger.flush()
        assert [e.type for e in iter_events(store, run_id="run_e")] == ["a", "b"]
        assert seen == ["after"]  # given up, so its owner stops waiting for it
        assert "deferred statement failed twice" in caplog.text
        ledger.flush()  # nothing left over to fail again
        assert seen == ["after"]
    finally:
        ledger.close()
        store.dispose()
