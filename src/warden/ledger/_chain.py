"""The hash chain: how one event's hash is computed from its fields and its predecessor."""

from __future__ import annotations

import hashlib
import json

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
    """SHA-256 over every stored field of the event, the payload as its stored text."""
    material = json.dumps(
        [stream, seq, tenant, run_id, ts, type, payload, prev_hash],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode()).hexdigest()
