"""Archiving old ledger events: a signed, encrypted file out, the store pruned, the rest
still verifying.

``archive`` takes, for each stream in scope, the longest prefix of events older than the
cut date (after any earlier cut), and:

1. verifies the store first (an archive of a chain that does not verify would launder it);
2. writes the archive file — a header, an Ed25519 signature (the checkpoint key) over the
   header and the ciphertext, and the events as export JSON lines encrypted with AES-256-GCM
   (the key derived with HKDF-SHA256 from a secret reference, the header as associated
   data) — and fsyncs it;
3. signs a checkpoint that names each cut ``[stream, tenant, seq, hash]`` and the archive's
   SHA-256: verification then starts each stream after its cut (``_verify.check_stream``);
4. deletes the archived events in one transaction.

A crash between the steps loses nothing: before 3 the store is unchanged (the orphaned
file is a harmless duplicate); between 3 and 4 the signed cut's events are still in the
store and verify against it, and the next ``archive`` deletes them (they are in the file
the checkpoint names). ``ledger_heads`` rows stay, so a stream archived whole that gets a
late event continues its chain instead of forking it.

SQLite reuses the largest row id once it is deleted, which would let a new event slip
behind an export cursor: the newest event of the ledger is never archived.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import func, select

from warden.errors import UsageError
from warden.ledger._canonical import canonical_json
from warden.ledger._chain import GENESIS
from warden.ledger._checkpoint import (
    Checkpoint,
    Head,
    signed_cuts,
    stored_checkpoints,
    take_checkpoint,
)
from warden.ledger._keys import key_id, public_from_b64, raw_public, signature_ok
from warden.ledger._verify import SHARED_STREAMS, Problem, check_stream, verify
from warden.store import Store
from warden.store import _fast as fast
from warden.store._tables import ledger_events, utc_text

FORMAT = "warden-ledger-archive"
VERSION = 1
_INFO = b"warden ledger archive v1"


@dataclass(frozen=True)
class ArchiveResult:
    path: Path
    events: int
    streams: int
    cuts: list[Head]
    checkpoint: int | None  # the checkpoint that signed the cuts (None: nothing archived)
    pruned: int  # events deleted from the store (this archive's, and an earlier one's left)


@dataclass(frozen=True)
class ArchiveReport:
    header: dict[str, Any]
    events: int
    streams: int
    problems: tuple[Problem, ...]
    key_id: str | None
    key_pinned: bool
    #: the archived events as export JSON lines (empty when it did not decrypt)
    plaintext: bytes = field(default=b"", repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems


def derive_key(secret: str, salt: bytes) -> bytes:
    """The AES-256 key: HKDF-SHA256 of the secret (any text: a passphrase or random key
    material) with the archive's random salt, so no two archives share a key."""
    if len(secret) < 16:
        raise UsageError("the archive secret is shorter than 16 characters; use a random key")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(
        secret.encode()
    )


def archive(
    store: Store,
    *,
    before: datetime,
    out: Path,
    key: Ed25519PrivateKey,
    secret: str,
    secret_ref: str,
    tenant: str | None = None,
    retain_until: datetime | None = None,
) -> ArchiveResult:
    """Archive the events older than ``before`` (of ``tenant``, else every tenant) into
    ``out`` and prune them; see the module docstring for the steps."""
    if before.tzinfo is None:
        raise UsageError("--before must be a timezone-aware time (UTC)")
    if out.exists():
        raise UsageError(f"{out} exists; an archive is never overwritten")
    report = verify(store, tenant=tenant, public_key=key.public_key())
    if not report.ok:
        raise UsageError(
            f"the ledger does not verify ({report.first}); investigate before archiving: an "
            "archive would carry the damage out of sight"
        )
    cuts = signed_cuts(stored_checkpoints(store))
    leftover = _prune(store, list(cuts.values()), tenant)  # an interrupted archive's
    events, new_cuts, starts = _plan(store, before, tenant, cuts)
    if not events:
        return ArchiveResult(out, 0, 0, [], None, leftover)
    public = key.public_key()
    plain = "".join(
        json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events
    ).encode()
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    header = canonical_json(
        {
            "format": FORMAT,
            "v": VERSION,
            "created_at": utc_text(datetime.now(UTC)),
            "before": utc_text(before),
            "tenant": tenant,
            "events": len(events),
            "streams": len(new_cuts),
            "starts": [[s, q, h] for s, (q, h) in sorted(starts.items())],
            "cuts": [[c.stream, c.tenant, c.seq, c.hash] for c in new_cuts],
            "key": key_id(public),
            "public_key": base64.b64encode(raw_public(public)).decode(),
            "cipher": "AES-256-GCM",
            "kdf": "HKDF-SHA256",
            "secret_ref": secret_ref,
            "salt": base64.b64encode(salt).decode(),
            "nonce": base64.b64encode(nonce).decode(),
            "plaintext_sha256": hashlib.sha256(plain).hexdigest(),
            "retain_until": None if retain_until is None else utc_text(retain_until),
        }
    ).encode()
    sealed = AESGCM(derive_key(secret, salt)).encrypt(nonce, plain, header)
    signature = key.sign(header + b"\n" + sealed).hex()
    body = header + b"\n" + signature.encode() + b"\n" + base64.b64encode(sealed) + b"\n"
    _write_new(out, body)
    made = take_checkpoint(
        store, key, cuts=new_cuts, archive=hashlib.sha256(body).hexdigest()
    )
    assert made is not None
    pruned = _prune(store, new_cuts, tenant)
    return ArchiveResult(out, len(events), len(new_cuts), new_cuts, made.n, pruned + leftover)


def _write_new(path: Path, data: bytes) -> None:
    """Write, fsync, and only then give the file its name: a crash leaves no half archive."""
    tmp = path.with_name(path.name + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if ``path`` appeared meanwhile: never overwrite
    finally:
        tmp.unlink(missing_ok=True)


def _plan(
    store: Store, before: datetime, tenant: str | None, cuts: dict[str, Head]
) -> tuple[list[dict[str, Any]], list[Head], dict[str, tuple[int, str]]]:
    """The events to archive (export JSON), the new cut of each stream, and where each
    stream's archived part starts (seq, previous hash)."""
    limit = utc_text(before)
    with store.read() as conn:
        newest = conn.execute(select(func.max(ledger_events.c.id))).scalar()
        query = (
            select(ledger_events)
            .where(ledger_events.c.ts < limit)
            .order_by(ledger_events.c.stream, ledger_events.c.seq)
        )
        if tenant is not None:
            # A shared stream holds several tenants' events: only an all-tenant archive
            # takes it.
            query = query.where(
                ledger_events.c.tenant == tenant,
                ledger_events.c.stream.not_in(sorted(SHARED_STREAMS)),
            )
        rows = list(conn.execute(query).mappings())
    events: list[dict[str, Any]] = []
    new_cuts: list[Head] = []
    starts: dict[str, tuple[int, str]] = {}
    by_stream: dict[str, list[Any]] = {}
    for row in rows:
        by_stream.setdefault(str(row["stream"]), []).append(row)
    for stream, stream_rows in sorted(by_stream.items()):
        cut = cuts.get(stream)
        seq, prev = (cut.seq, cut.hash) if cut else (0, GENESIS)
        taken = []
        for row in stream_rows:
            if int(row["seq"]) <= seq and cut is not None:
                continue  # archived before
            if int(row["seq"]) != seq + 1 or row["id"] == newest:
                break  # a prefix only; and never the newest row (see the module docstring)
            taken.append(row)
            seq = int(row["seq"])
        if not taken:
            continue
        start_seq = int(taken[0]["seq"])
        starts[stream] = (start_seq, prev)
        for row in taken:
            events.append(
                {
                    "id": row["id"],
                    "stream": stream,
                    "seq": row["seq"],
                    "tenant": row["tenant"],
                    "run_id": row["run_id"],
                    "ts": row["ts"],
                    "type": row["type"],
                    "payload": json.loads(row["payload"]),
                    "prev_hash": row["prev_hash"],
                    "hash": row["hash"],
                }
            )
        last = taken[-1]
        new_cuts.append(Head(stream, str(last["tenant"]), int(last["seq"]), str(last["hash"])))
    return events, new_cuts, starts


def _prune(store: Store, cuts: list[Head], tenant: str | None) -> int:
    """Delete the events at or before each cut (one transaction); how many went."""
    mine = [c for c in cuts if tenant is None or c.tenant == tenant]
    if not mine:
        return 0
    with store.write() as conn:
        total = 0
        for c in mine:
            cur = fast.execute(
                conn, "DELETE FROM ledger_events WHERE stream = ? AND seq <= ?", (c.stream, c.seq)
            )
            total += max(cur.rowcount, 0)
            cur.close()
    return total


# -- reading and verifying an archive --------------------------------------------------


def read_archive(path: Path) -> tuple[bytes, str, bytes]:
    """The header (the exact bytes signed), the signature (hex) and the ciphertext."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read archive {path}: {exc.strerror or exc}") from None
    parts = data.split(b"\n")
    if len(parts) != 4 or parts[3] != b"":
        raise UsageError(f"{path}: not a Warden ledger archive (expected 3 lines)")
    try:
        sealed = base64.b64decode(parts[2], validate=True)
        signature = parts[1].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{path}: not a Warden ledger archive (bad encoding)") from None
    return parts[0], signature, sealed


def verify_archive(
    path: Path, secret: str, *, public_key: Ed25519PublicKey | None = None
) -> ArchiveReport:
    """Check an archive with no database: the signature (against ``public_key``, else the
    key the header names: the report says which), the decryption (any changed byte fails
    AES-GCM's tag), and every archived chain from its start to its signed cut."""
    header_bytes, signature, sealed = read_archive(path)
    try:
        header: dict[str, Any] = json.loads(header_bytes)
        if header.get("format") != FORMAT or header.get("v") != VERSION:
            raise ValueError(f"format {header.get('format')!r} v{header.get('v')!r}")
        salt = base64.b64decode(header["salt"])
        nonce = base64.b64decode(header["nonce"])
        cuts = [Head(str(s), str(t), int(q), str(h)) for s, t, q, h in header["cuts"]]
        starts = {str(s): (int(q), str(h)) for s, q, h in header["starts"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a Warden ledger archive header ({exc})") from None
    pinned = public_key is not None
    problems: list[Problem] = []
    if public_key is None:
        public_key = public_from_b64(str(header.get("public_key", "")))
    if header.get("key") != key_id(public_key):
        problems.append(
            Problem("archive", None, None, "checkpoint",
                    f"signed by key {header.get('key')}, not {key_id(public_key)}")
        )  # fmt: skip
    elif not signature_ok(public_key, signature, header_bytes + b"\n" + sealed):
        problems.append(
            Problem("archive", None, None, "edited", "its signature does not verify: the file "
                    "was changed after it was written")
        )  # fmt: skip
    try:
        plain = AESGCM(derive_key(secret, salt)).decrypt(nonce, sealed, header_bytes)
    except InvalidTag:
        problems.append(
            Problem("archive", None, None, "edited", "it does not decrypt: the bytes were "
                    "changed, or the secret is not the one it was written with")
        )  # fmt: skip
        return ArchiveReport(header, 0, 0, tuple(problems), key_id(public_key), pinned)
    if hashlib.sha256(plain).hexdigest() != header.get("plaintext_sha256"):
        problems.append(Problem("archive", None, None, "edited", "its content digest differs"))
    events = [json.loads(line) for line in plain.decode().splitlines() if line]
    streams: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        event["payload"] = canonical_json(event["payload"])
        streams.setdefault(str(event["stream"]), []).append(event)
    for cut in cuts:
        rows = sorted(streams.pop(cut.stream, []), key=lambda e: int(e["seq"]))
        start_seq, prev = starts.get(cut.stream, (1, GENESIS))
        before = Head(cut.stream, cut.tenant, start_seq - 1, prev) if start_seq > 1 else None
        found, chain = check_stream(cut.stream, rows, cut=before)
        problems += found
        if rows and int(rows[0]["seq"]) != start_seq:
            problems.append(
                Problem(cut.stream, int(rows[0]["seq"]), None, "deleted",
                        f"the archive says the stream starts at seq {start_seq}")
            )  # fmt: skip
        if (chain.last_seq, chain.last_hash) != (cut.seq, cut.hash):
            problems.append(
                Problem(cut.stream, chain.last_seq, None, "truncated",
                        f"the signed cut is seq {cut.seq}; the archived events end at seq "
                        f"{chain.last_seq} with another hash")
            )  # fmt: skip
    for stream in sorted(streams):
        problems.append(
            Problem(stream, None, None, "inserted", "events of a stream the archive did not cut")
        )
    if len(events) != header.get("events"):
        problems.append(
            Problem("archive", None, None, "deleted",
                    f"{len(events)} events; the header says {header.get('events')}")
        )  # fmt: skip
    return ArchiveReport(
        header, len(events), len(cuts), tuple(problems), key_id(public_key), pinned, plain
    )


def cut_checkpoints(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """The checkpoints that cut streams (each names its archive's SHA-256)."""
    return [cp for cp in checkpoints if cp.cuts]
