"""Signed checkpoints of the chain heads, in the store and in a file an outsider keeps.

A checkpoint is a small JSON body — its number, the hash of the previous checkpoint's body,
the time, the signing key's id, and ``[stream, tenant, seq, hash]`` for every stream whose
head moved since the previous checkpoint — and an Ed25519 signature over exactly that
text. Verification (``_verify``, ``_offline``) then knows, for every checkpointed stream,
the hash its event at that seq must still have: a chain rewritten consistently (payloads,
hashes, heads), truncated, deleted or moved to another tenant no longer matches what was
signed. What a checkpoint cannot protect is what happened after it: see docs/ledger.md.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select

from warden.errors import UsageError
from warden.ledger._canonical import canonical_json
from warden.ledger._chain import GENESIS
from warden.ledger._keys import key_id, public_from_b64, raw_public, signature_ok
from warden.store import Store
from warden.store import _fast as fast
from warden.store._tables import ledger_checkpoints

FORMAT = 1
log = logging.getLogger("warden.ledger")


@dataclass(frozen=True, slots=True)
class Head:
    stream: str
    tenant: str
    seq: int
    hash: str


@dataclass(frozen=True)
class Checkpoint:
    n: int
    body: str  # the exact text that was signed
    signature: str  # hex

    @property
    def public_key(self) -> str:
        """Base64 of the signer's 32 raw bytes, as signed; verifiers should pin their own."""
        return str(self.fields.get("public_key", ""))

    @property
    def fields(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def heads(self) -> list[Head]:
        return [Head(str(s), str(t), int(q), str(h)) for s, t, q, h in self.fields["heads"]]

    @property
    def cuts(self) -> list[Head]:
        """Where ``warden ledger archive`` cut streams: every event up to ``seq`` (whose hash
        is ``hash``) went into the archive this checkpoint names and left the store."""
        return [Head(str(s), str(t), int(q), str(h)) for s, t, q, h in self.fields.get("cuts", [])]

    @property
    def digest(self) -> str:
        """What the next checkpoint's ``prev`` must be."""
        return hashlib.sha256(self.body.encode()).hexdigest()

    def to_line(self) -> str:
        return canonical_json({"n": self.n, "body": self.body, "signature": self.signature})

    @classmethod
    def from_line(cls, line: str, where: str) -> Checkpoint:
        try:
            data = json.loads(line)
            made = cls(int(data["n"]), str(data["body"]), str(data["signature"]))
            fields = made.fields
            if fields.get("v") != FORMAT or int(fields["n"]) != made.n:
                raise ValueError(f"format {fields.get('v')!r}, n {fields.get('n')!r}")
            made.heads  # noqa: B018 (parsed here so that a malformed body fails here)
            made.cuts  # noqa: B018
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"{where}: not a ledger checkpoint ({type(exc).__name__}: {exc})"
            ) from None
        return made


_LAST = "SELECT n, body FROM ledger_checkpoints ORDER BY n DESC LIMIT 1"
_MOVED = (
    "SELECT stream, tenant, seq, hash FROM ledger_heads WHERE seq > checkpointed_seq"
    " ORDER BY stream"
)
_MARK = "UPDATE ledger_heads SET checkpointed_seq = ? WHERE stream = ? AND checkpointed_seq < ?"
_INSERT = (
    "INSERT INTO ledger_checkpoints (n, created_at, key_id, body, signature) VALUES (?, ?, ?, ?, ?)"
)


def take_checkpoint(
    store: Store,
    key: Ed25519PrivateKey,
    *,
    force: bool = True,
    out: Path | None = None,
    cuts: list[Head] | None = None,
    archive: str | None = None,
) -> Checkpoint | None:
    """Sign the heads that moved since the last checkpoint and store the checkpoint.

    ``force=False`` (the periodic loop): None, and nothing written, if no head moved.
    ``out``: also append the checkpoint to that file.
    ``cuts`` and ``archive`` (``ledger._archive``): the streams an archive cut, and the
    SHA-256 of that archive file, signed with the heads.
    """
    public = key.public_key()
    with store.write() as conn:
        # One checkpointer at a time, across processes and replicas: numbers stay dense.
        store.lock(conn, "ledger:checkpoint")
        last = fast.fetch_one(conn, _LAST)
        cur = fast.execute(conn, _MOVED)
        heads = [[str(s), str(t), int(q), str(h)] for s, t, q, h in cur.fetchall()]
        cur.close()
        if not heads and not force:
            return None
        n = 1 if last is None else int(last[0]) + 1
        prev = GENESIS if last is None else hashlib.sha256(str(last[1]).encode()).hexdigest()
        at = datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
        fields: dict[str, Any] = {
            "v": FORMAT,
            "n": n,
            "prev": prev,
            "at": at,
            "key": key_id(public),
            "public_key": base64.b64encode(raw_public(public)).decode(),
            "heads": heads,
        }
        if cuts:
            # Optional fields: a verifier that predates archives reads the rest unchanged.
            fields["cuts"] = [[c.stream, c.tenant, c.seq, c.hash] for c in cuts]
            fields["archive"] = archive
        body = canonical_json(fields)
        signature = key.sign(body.encode()).hex()
        fast.execute(conn, _INSERT, (n, at, key_id(public), body, signature)).close()
        if heads:
            fast.execute_many(conn, _MARK, [(q, s, q) for s, _t, q, _h in heads])
    made = Checkpoint(n, body, signature)
    if out is not None:
        merge_into_file(out, [made])
    return made


def stored_checkpoints(store: Store) -> list[Checkpoint]:
    """Every checkpoint in the store, oldest first."""
    with store.read() as conn:
        rows = conn.execute(select(ledger_checkpoints).order_by(ledger_checkpoints.c.n)).all()
    return [Checkpoint(int(row.n), str(row.body), str(row.signature)) for row in rows]


def read_checkpoint_file(path: Path) -> list[Checkpoint]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read checkpoints {path}: {exc.strerror or exc}") from None
    return [
        Checkpoint.from_line(line, f"{path}:{i}")
        for i, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]


def merge_into_file(path: Path, checkpoints: Iterable[Checkpoint]) -> int:
    """Append the checkpoints newer than the file's last one; returns how many.

    The file is the outsider's copy: what it already holds is never rewritten, so a store
    that lost or changed old checkpoints cannot change the file's account of them.
    """
    have = read_checkpoint_file(path) if path.exists() else []
    last = have[-1].n if have else 0
    new = [c for c in checkpoints if c.n > last]
    if new:
        with path.open("a", encoding="utf-8") as fh:
            for c in new:
                fh.write(c.to_line() + "\n")
    return len(new)


@dataclass(frozen=True)
class CheckpointIssue:
    n: int | None
    detail: str


def check_checkpoints(
    checkpoints: list[Checkpoint], public: Ed25519PublicKey | None
) -> tuple[list[CheckpointIssue], Ed25519PublicKey | None]:
    """Signatures and the chain of checkpoints (dense numbers, each ``prev`` the digest of
    the one before). Without a pinned ``public`` key, the key named by the first
    checkpoint is used and every later one must use it too; the caller says so."""
    issues: list[CheckpointIssue] = []
    if not checkpoints:
        return issues, public
    if public is None:
        embedded = checkpoints[0].public_key
        try:
            public = public_from_b64(embedded)
        except UsageError:
            return [CheckpointIssue(checkpoints[0].n, "carries no usable public key")], None
    expected_key = key_id(public)
    before: Checkpoint | None = None
    for cp in checkpoints:
        fields = cp.fields
        if fields.get("key") != expected_key:
            issues.append(
                CheckpointIssue(cp.n, f"signed by key {fields.get('key')}, not {expected_key}")
            )
        elif not signature_ok(public, cp.signature, cp.body.encode()):
            issues.append(CheckpointIssue(cp.n, "its signature does not verify"))
        if before is not None:
            if cp.n != before.n + 1:
                issues.append(
                    CheckpointIssue(cp.n, f"follows checkpoint {before.n}: checkpoints missing")
                )
            elif fields.get("prev") != before.digest:
                issues.append(
                    CheckpointIssue(cp.n, "its prev does not match the checkpoint before it")
                )
        before = cp
    return issues, public


def signed_cuts(checkpoints: Iterable[Checkpoint]) -> dict[str, Head]:
    """The furthest signed cut of each stream."""
    found: dict[str, Head] = {}
    for cp in checkpoints:
        for cut in cp.cuts:
            if cut.stream not in found or cut.seq > found[cut.stream].seq:
                found[cut.stream] = cut
    return found


def signed_heads(checkpoints: Iterable[Checkpoint]) -> Iterator[tuple[int, Head]]:
    for cp in checkpoints:
        for head in cp.heads:
            yield cp.n, head


async def checkpoint_loop(
    store: Store,
    key: Ed25519PrivateKey,
    every_s: float,
    *,
    out: Path | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Take a checkpoint every ``every_s`` seconds (when a head moved) until ``stop`` is set.

    For ``warden serve``: start it as a task on the server's loop. The store work runs in
    a thread, off the loop; a failure is logged and retried at the next tick.
    """
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
            return
        except TimeoutError:
            pass
        try:
            await asyncio.to_thread(take_checkpoint, store, key, force=False, out=out)
        except Exception:
            log.exception("ledger checkpoint failed; retrying in %.0f s", every_s)
