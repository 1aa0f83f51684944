"""Verifying the chain: every kind of tampering is named at the first event it touches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import RowMapping, select

from warden.ledger._chain import GENESIS, event_hash
from warden.store import Store
from warden.store._tables import ledger_events, ledger_heads


@dataclass(frozen=True)
class Problem:
    stream: str
    seq: int | None
    event_id: int | None
    kind: str  # edited | deleted | inserted | reordered | truncated
    detail: str

    def __str__(self) -> str:
        where = f"stream {self.stream}"
        if self.seq is not None:
            where += f", seq {self.seq}"
        if self.event_id is not None:
            where += f" (row id {self.event_id})"
        return f"{self.kind}: {where}: {self.detail}"


@dataclass(frozen=True)
class VerifyReport:
    events: int
    streams: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


def verify(store: Store, *, tenant: str | None = None, max_problems: int = 100) -> VerifyReport:
    """Recompute every stream's chain and compare it with the recorded heads."""
    problems: list[Problem] = []
    n_events = 0
    with store.read() as conn:
        heads_q = select(ledger_heads.c.stream, ledger_heads.c.seq, ledger_heads.c.hash)
        ev_q = select(ledger_events).order_by(ledger_events.c.stream, ledger_events.c.seq)
        if tenant is not None:
            heads_q = heads_q.where(ledger_heads.c.tenant == tenant)
            ev_q = ev_q.where(ledger_events.c.tenant == tenant)
        heads = {row.stream: (row.seq, row.hash) for row in conn.execute(heads_q)}
        seen: set[str] = set()
        for stream, rows in _by_stream(conn.execute(ev_q).mappings()):
            seen.add(stream)
            n_events += len(rows)
            problems.extend(_check_stream(stream, rows, heads.get(stream)))
            if len(problems) >= max_problems:
                break
    for stream in sorted(set(heads) - seen):
        problems.append(
            Problem(
                stream,
                None,
                None,
                "deleted",
                "the stream's head is recorded but all its events are gone",
            )
        )
    return VerifyReport(n_events, len(heads | dict.fromkeys(seen, (0, ""))), tuple(problems))


def _by_stream(rows: Iterable[RowMapping]) -> Iterator[tuple[str, list[RowMapping]]]:
    current: str | None = None
    batch: list[RowMapping] = []
    for record in rows:
        if record["stream"] != current and batch:
            yield str(current), batch
            batch = []
        current = str(record["stream"])
        batch.append(record)
    if batch:
        yield str(current), batch


def _check_stream(
    stream: str, rows: list[RowMapping], head: tuple[int, str] | None
) -> list[Problem]:
    problems: list[Problem] = []
    prev_hash = GENESIS
    expected_seq = 1
    prev_id = -1
    for row in rows:
        seq = int(row["seq"])
        row_id = int(row["id"])
        if row_id < prev_id:
            problems.append(
                Problem(
                    stream,
                    seq,
                    row_id,
                    "reordered",
                    "stored out of order relative to its predecessor",
                )
            )
        prev_id = row_id
        if seq != expected_seq:
            kind = "deleted" if seq > expected_seq else "inserted"
            problems.append(
                Problem(stream, seq, row_id, kind, f"expected seq {expected_seq}, found {seq}")
            )
            expected_seq = seq
        recomputed = event_hash(
            stream=stream,
            seq=seq,
            tenant=str(row["tenant"]),
            run_id=None if row["run_id"] is None else str(row["run_id"]),
            ts=str(row["ts"]),
            type=str(row["type"]),
            payload=str(row["payload"]),
            prev_hash=str(row["prev_hash"]),
        )
        if row["prev_hash"] != prev_hash:
            problems.append(
                Problem(
                    stream,
                    seq,
                    row_id,
                    "inserted" if recomputed == row["hash"] else "edited",
                    "its previous-hash does not match the event before it",
                )
            )
        elif recomputed != row["hash"]:
            problems.append(
                Problem(stream, seq, row_id, "edited", "its content does not match its hash")
            )
        prev_hash = str(row["hash"])
        expected_seq += 1
    if head is None:
        problems.append(
            Problem(
                stream,
                None,
                None,
                "inserted",
                "events exist for a stream that has no recorded head",
            )
        )
    elif head != (expected_seq - 1, prev_hash):
        problems.append(
            Problem(
                stream,
                head[0],
                None,
                "truncated",
                f"the head records seq {head[0]}, the events end at seq {expected_seq - 1}",
            )
        )
    return problems
