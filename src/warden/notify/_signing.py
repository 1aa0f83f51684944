"""Signing webhook bodies, and the check a receiver runs.

The header is ``X-Warden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`` over
``b"<t>." + body``. Binding the timestamp into the MAC lets a receiver refuse replays of an
old delivery; ``v1`` names the scheme so that it can change without breaking receivers.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime


def _mac(secret: str, body: bytes, timestamp: int) -> str:
    return hmac.new(
        secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Warden-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, body, timestamp)}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_s: float = 300,
    now: datetime | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of ``now``.

    Never raises on a malformed header: it is simply not valid. Several ``v1`` entries are
    accepted (any may match), so a sender can sign with an old and a new secret while the
    secret is rotated.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = (now or datetime.now(UTC)).timestamp()
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, body, timestamp)
    # compare_digest on every candidate: the time taken does not depend on which matched.
    matches = [hmac.compare_digest(expected, c) for c in candidates]
    return any(matches)
