"""The hash chain: how one event's hash is computed from its fields and its predecessor."""

from __future__ import annotations

import hashlib

GENESIS = "0" * 64


def event_hash(
    *,
    stream: str,
    seq: int,
    tenant: str,
    run_id: str | None,
    ts: str,
    type: str,
    payload: str,
    prev_hash: str,
) -> str:
    """SHA-256 over every stored field of the event, the payload as its stored text.

    Each field is length-prefixed, so no two different events share an input (a plain join
    would let characters move between neighbouring fields).
    """
    fields = (
        stream,
        str(seq),
        tenant,
        "" if run_id is None else run_id,
        ts,
        type,
        payload,
        prev_hash,
    )
    material = "".join(f"{len(f)}:{f}" for f in fields) + ("" if run_id is not None else "~")
    return hashlib.sha256(material.encode()).hexdigest()
