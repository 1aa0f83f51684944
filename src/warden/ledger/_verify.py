"""Verifying the ledger: every kind of tampering is named at the first event it touches.

Three layers, each catching what the one before cannot:

1. the hash chain of each stream (an edit, deletion, insertion or reordering that did not
   recompute the hashes);
2. signed checkpoints of the heads (``_checkpoint``): a rewrite that recomputed every hash
   and head consistently no longer matches the hash that was signed at that seq;
3. cross-checks of the runs, approvals and idempotency tables against the events
   (``_crosscheck``): whole runs deleted, a tail cut off and its head reset, a run moved
   to another tenant, events removed and the stream re-chained after the last checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import RowMapping, or_, select

from warden.ledger._chain import GENESIS, event_hash
from warden.ledger._checkpoint import (
    Checkpoint,
    Head,
    check_checkpoints,
    signed_cuts,
    stored_checkpoints,
)
from warden.ledger._keys import key_id
from warden.store import Store
from warden.store._tables import ledger_events, ledger_heads

# Streams that several tenants write to (kill-switch changes): verified whole even when
# one tenant is asked for, since a tenant's events alone are not a chain.
SHARED_STREAMS = frozenset({"switches"})


@dataclass(frozen=True)
class Problem:
    stream: str
    seq: int | None
    event_id: int | None
    # edited | deleted | inserted | reordered | truncated: the chain itself;
    # rewritten | moved: against a signed checkpoint (or the runs table for moved);
    # missing: a record in runs / approvals / idempotency that the events do not bear out;
    # checkpoint: a checkpoint that is unsigned, forged or missing from the sequence.
    kind: str
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
    checkpoints: int = 0
    # The id of the key the checkpoints were checked with, and whether the caller pinned it
    # (else it is the key the first checkpoint names: a forger could have used their own).
    key_id: str | None = None
    key_pinned: bool = False
    last_checkpoint_at: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


@dataclass
class Chain:
    """What verifying one stream learned: where it ends, and its hashes at signed seqs."""

    stream: str
    tenant: str | None = None
    last_seq: int = 0
    last_hash: str = GENESIS
    at: dict[int, str] = field(default_factory=dict)


def check_stream(
    stream: str,
    rows: Iterable[Mapping[Any, Any]],
    *,
    wanted: set[int] | frozenset[int] = frozenset(),
    partial: bool = False,
    on_event: Callable[[Mapping[Any, Any]], None] | None = None,
    cut: Head | None = None,
) -> tuple[list[Problem], Chain]:
    """Recompute one stream's chain from its rows (ordered by seq; ``payload`` the stored
    text). ``partial``: the rows are a subset of the stream (one tenant's events of a
    shared stream): gaps are expected, and links are checked only between neighbours.
    ``cut``: a signed archive cut of the stream; rows that start after it chain onto the
    cut's hash, rows that still hold the archived prefix must reach that hash at its seq."""
    problems: list[Problem] = []
    chain = Chain(stream)
    prev_hash = GENESIS
    expected_seq = 1
    prev_id = -1
    if cut is not None:
        wanted = set(wanted) | {cut.seq}
    first = True
    for row in rows:
        seq = int(row["seq"])
        if first and cut is not None and seq > cut.seq:
            prev_hash, expected_seq = cut.hash, cut.seq + 1
        first = False
        row_id = int(row["id"]) if row.get("id") is not None else None
        if chain.tenant is None:
            chain.tenant = str(row["tenant"])
        if row_id is not None:
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
        linked = True
        if seq != expected_seq:
            if partial and seq > expected_seq:
                linked = False
            else:
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
        if linked and row["prev_hash"] != prev_hash:
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
        if seq in wanted:
            chain.at[seq] = prev_hash
        if on_event is not None:
            on_event(row)
        expected_seq += 1
    chain.last_seq, chain.last_hash = expected_seq - 1, prev_hash
    if cut is not None and cut.seq in chain.at and chain.at[cut.seq] != cut.hash:
        problems.append(
            Problem(
                stream,
                cut.seq,
                None,
                "rewritten",
                f"the events up to seq {cut.seq} are not the ones archived at the signed cut",
            )
        )
    return problems, chain


def signed_by_stream(checkpoints: Iterable[Checkpoint]) -> dict[str, list[tuple[int, Head]]]:
    out: dict[str, list[tuple[int, Head]]] = {}
    for cp in checkpoints:
        for head in cp.heads:
            out.setdefault(head.stream, []).append((cp.n, head))
    return out


def compare_with_signed(
    signed: Mapping[str, list[tuple[int, Head]]],
    chains: Mapping[str, Chain],
    *,
    in_scope: Callable[[Head], bool],
    partial: Callable[[str], bool],
    cuts: Mapping[str, Head] | None = None,
) -> list[Problem]:
    """Each stream against what the checkpoints signed of it (the latest signed head, and
    for a partial stream every signed head whose event is present). A head at or before
    a signed cut whose event was archived is the archive's to verify."""
    problems: list[Problem] = []
    cuts = cuts or {}
    for stream, heads in signed.items():
        heads = [(n, h) for n, h in heads if in_scope(h)]
        cut = cuts.get(stream)
        if cut is not None:
            at = chains[stream].at if stream in chains else {}
            heads = [(n, h) for n, h in heads if h.seq > cut.seq or h.seq in at]
        if not heads:
            continue
        n, head = max(heads, key=lambda item: item[1].seq)
        chain = chains.get(stream)
        if partial(stream):
            for n_i, h in heads:
                if chain is not None and h.seq in chain.at and chain.at[h.seq] != h.hash:
                    problems.append(_rewritten(stream, n_i, h.seq))
                    break
            continue
        if chain is None:
            problems.append(
                Problem(
                    stream,
                    head.seq,
                    None,
                    "deleted",
                    f"checkpoint {n} signed this stream (tenant {head.tenant}) up to seq "
                    f"{head.seq}; none of its events is left",
                )
            )
            continue
        if stream not in SHARED_STREAMS and chain.tenant != head.tenant:
            problems.append(
                Problem(
                    stream,
                    None,
                    None,
                    "moved",
                    f"checkpoint {n} signed this stream for tenant {head.tenant}; "
                    f"its events now say tenant {chain.tenant}",
                )
            )
        if head.seq > chain.last_seq:
            problems.append(
                Problem(
                    stream,
                    head.seq,
                    None,
                    "truncated",
                    f"checkpoint {n} signed seq {head.seq}; the events end at seq {chain.last_seq}",
                )
            )
        elif chain.at.get(head.seq) != head.hash:
            problems.append(_rewritten(stream, n, head.seq))
    return problems


def _rewritten(stream: str, n: int, seq: int) -> Problem:
    return Problem(
        stream,
        seq,
        None,
        "rewritten",
        f"the chain up to seq {seq} is not the one checkpoint {n} signed: events at or before "
        "it were changed and the hashes recomputed",
    )


def checkpoint_problems(
    checkpoints: list[Checkpoint], public: Ed25519PublicKey | None
) -> tuple[list[Problem], list[Checkpoint], Ed25519PublicKey | None]:
    """Problems with the checkpoints themselves, and the ones that can be trusted."""
    usable: list[Checkpoint] = []
    problems: list[Problem] = []
    for cp in checkpoints:
        try:
            cp.heads  # noqa: B018 (a body that does not parse is itself tampering)
            cp.cuts  # noqa: B018
        except (ValueError, KeyError, TypeError):
            problems.append(
                Problem("checkpoints", cp.n, None, "checkpoint", "its body does not parse")
            )
            continue
        usable.append(cp)
    issues, public = check_checkpoints(usable, public)
    bad = {i.n for i in issues if "signature" in i.detail or "signed by" in i.detail}
    problems += [Problem("checkpoints", i.n, None, "checkpoint", i.detail) for i in issues]
    return problems, [cp for cp in usable if cp.n not in bad], public


def verify(
    store: Store,
    *,
    tenant: str | None = None,
    max_problems: int = 100,
    checkpoints: list[Checkpoint] | None = None,
    public_key: Ed25519PublicKey | None = None,
    cross_check: bool = True,
) -> VerifyReport:
    """Recompute every stream's chain; compare it with the recorded heads, the signed
    checkpoints (``checkpoints``, else those in the store) and the runs, approvals and
    idempotency tables.

    ``tenant``: only the streams that hold that tenant's events (a shared stream whole).
    ``public_key``: the key checkpoints must be signed with; without it, the key the first
    checkpoint names (the report says which).
    """
    from warden.ledger._crosscheck import RunFacts, cross_check_tables

    pinned = public_key is not None
    cps = stored_checkpoints(store) if checkpoints is None else checkpoints
    problems, trusted, public_key = checkpoint_problems(cps, public_key)
    signed = signed_by_stream(trusted)
    cuts = signed_cuts(trusted)
    chains: dict[str, Chain] = {}
    facts = RunFacts()
    n_events = 0
    with store.read() as conn:
        heads_q = select(ledger_heads.c.stream, ledger_heads.c.seq, ledger_heads.c.hash)
        ev_q = select(ledger_events).order_by(ledger_events.c.stream, ledger_events.c.seq)
        if tenant is not None:
            # Whole streams: every stream with an event or a head of the tenant.
            mine = or_(
                ledger_events.c.stream.in_(
                    select(ledger_events.c.stream).where(ledger_events.c.tenant == tenant)
                ),
                ledger_events.c.stream.in_(
                    select(ledger_heads.c.stream).where(ledger_heads.c.tenant == tenant)
                ),
            )
            ev_q = ev_q.where(mine)
            heads_q = heads_q.where(
                or_(
                    ledger_heads.c.tenant == tenant,
                    ledger_heads.c.stream.in_(
                        select(ledger_events.c.stream).where(ledger_events.c.tenant == tenant)
                    ),
                )
            )
        heads = {row.stream: (row.seq, row.hash) for row in conn.execute(heads_q)}
        for stream, rows in _by_stream(conn.execute(ev_q).mappings()):
            n_events += len(rows)
            wanted = {h.seq for _n, h in signed.get(stream, ())}
            found, chain = check_stream(
                stream, rows, wanted=wanted, on_event=facts.observe, cut=cuts.get(stream)
            )
            chains[stream] = chain
            problems.extend(found)
            problems.extend(_against_head(chain, heads.get(stream)))
            if len(problems) >= max_problems:
                break
    for stream in sorted(set(heads) - set(chains)):
        cut = cuts.get(stream)
        if cut is not None and (cut.seq, cut.hash) == heads[stream]:
            continue  # archived whole
        problems.append(
            Problem(
                stream,
                None,
                None,
                "deleted",
                "the stream's head is recorded but all its events are gone",
            )
        )
    problems += compare_with_signed(
        signed,
        chains,
        in_scope=lambda h: tenant is None or h.tenant == tenant or h.stream in chains,
        partial=lambda _s: False,
        cuts=cuts,
    )
    if cross_check and len(problems) < max_problems:
        # A run whose events were partly archived is checked against its archive.
        problems += cross_check_tables(store, facts, tenant=tenant, archived=frozenset(cuts))
    return VerifyReport(
        n_events,
        len(set(heads) | set(chains)),
        tuple(problems[:max_problems]),
        checkpoints=len(cps),
        key_id=None if public_key is None else key_id(public_key),
        key_pinned=pinned,
        last_checkpoint_at=str(trusted[-1].fields.get("at")) if trusted else None,
    )


def _against_head(chain: Chain, head: tuple[int, str] | None) -> list[Problem]:
    if head is None:
        return [
            Problem(
                chain.stream,
                None,
                None,
                "inserted",
                "events exist for a stream that has no recorded head",
            )
        ]
    if head != (chain.last_seq, chain.last_hash):
        return [
            Problem(
                chain.stream,
                head[0],
                None,
                "truncated",
                f"the head records seq {head[0]}, the events end at seq {chain.last_seq}",
            )
        ]
    return []


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


def parse_payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
