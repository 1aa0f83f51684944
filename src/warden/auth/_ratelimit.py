"""Per-key rate limits decided in the store, so they hold across replicas.

A fixed one-second window per key; the counter is incremented with one atomic upsert
(``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``), so N replicas together admit at most
``limit`` requests per key per second.
"""

from __future__ import annotations

import time

from warden.store import Store
from warden.store import _fast as fast

_HIT = (
    "INSERT INTO rate_counters (key_id, window_start, count) VALUES (?, ?, 1)"
    " ON CONFLICT (key_id, window_start) DO UPDATE SET count = rate_counters.count + 1"
    " RETURNING count"
)
_PRUNE = "DELETE FROM rate_counters WHERE key_id = ? AND window_start < ?"


class RateLimiter:
    def __init__(self, store: Store, per_second: int) -> None:
        self._store = store
        self.per_second = per_second
        self._pruned: dict[str, int] = {}

    def hit(self, key_id: str) -> tuple[bool, float]:
        """Count one request; (allowed, seconds until the window resets)."""
        if self.per_second <= 0:
            return True, 0.0
        now = time.time()
        window = int(now)
        with self._store.write(durable=False) as conn:
            row = fast.fetch_one(conn, _HIT, (key_id, window))
            if self._pruned.get(key_id, 0) < window - 60:
                fast.execute(conn, _PRUNE, (key_id, window - 5)).close()
                self._pruned[key_id] = window
        count = int(row[0]) if row else 1
        return count <= self.per_second, window + 1 - now
