"""The replica registry: which processes serve this store, and which switches they have seen.

A registered process (every ``warden serve`` worker; an SDK gateway that calls
``gateway.switches.register()``) has one row in ``replicas``, upserted by its switch
board's refresh thread at most once a second (``Heartbeat``): never on a governed call's
path. The row says when the process was last seen and when it last read the switch table
(``switches_read_at``, the moment that read began). A replica is *live* when seen within
``live_s`` (10 s by default, ``WARDEN_REPLICA_LIVE_S`` for the server); rows unseen for an
hour are pruned; a clean stop deletes its own row at once.

A live replica *has seen* a switch when its last read began after the switch was set, with
``COMMIT_MARGIN`` to spare: a switch's ``set_at`` is taken when its transaction begins,
and a read that starts between that and the commit does not see it yet. Times come from
each host's clock: hosts that share a store keep their clocks in sync (NTP).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from warden.store import Store
from warden.store._tables import replicas

Kind = Literal["serve", "sdk"]

#: a read that began this long after a switch's ``set_at`` saw its commit
COMMIT_MARGIN = timedelta(milliseconds=250)
#: rows of processes unseen for this long are deleted
PRUNE_AFTER = timedelta(hours=1)
#: the default window within which a replica counts as live
LIVE_S = 10.0


@dataclass(frozen=True, slots=True)
class Replica:
    replica_id: str
    kind: str
    host: str
    pid: int
    version: str
    started_at: datetime
    last_seen_at: datetime
    switches_read_at: datetime | None

    @property
    def label(self) -> str:
        """``host:pid``, how people name a process."""
        return f"{self.host}:{self.pid}"

    def live(self, now: datetime, live_s: float = LIVE_S) -> bool:
        return now - self.last_seen_at <= timedelta(seconds=live_s)

    def has_seen(self, set_at: datetime) -> bool:
        """Whether this replica's last read of the switch table came after ``set_at``."""
        return self.switches_read_at is not None and self.switches_read_at > set_at + COMMIT_MARGIN


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("warden")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        return "0"


class Heartbeat:
    """One process's row in ``replicas``: written by ``beat`` (the switch board's refresh
    thread calls it after each successful read), at most once every ``every_s``."""

    def __init__(self, store: Store, kind: Kind, *, every_s: float = 1.0) -> None:
        self._store = store
        self.replica_id = uuid.uuid4().hex[:16]
        self.kind: Kind = kind
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()
        self.version = _version()[:40]
        self.started_at = datetime.now(UTC)
        self._every = timedelta(seconds=every_s)
        self._last: datetime | None = None
        self._last_prune: datetime | None = None

    def beat(self, switches_read_at: datetime | None, *, force: bool = False) -> bool:
        """Upsert the row (and prune old ones, once a minute); False when the last write is
        less than ``every_s`` old."""
        now = datetime.now(UTC)
        if not force and self._last is not None and now - self._last < self._every:
            return False
        values = {
            "kind": self.kind,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "started_at": self.started_at,
            "last_seen_at": now,
            "switches_read_at": switches_read_at,
        }
        with self._store.write(durable=False) as conn:
            _upsert(conn, {"replica_id": self.replica_id, **values})
            if self._last_prune is None or now - self._last_prune >= timedelta(minutes=1):
                conn.execute(delete(replicas).where(replicas.c.last_seen_at < now - PRUNE_AFTER))
                self._last_prune = now
        self._last = now
        return True

    def leave(self) -> None:
        """Delete this process's row (a clean stop: it is no longer waited for)."""
        with self._store.write(durable=False) as conn:
            conn.execute(delete(replicas).where(replicas.c.replica_id == self.replica_id))


def _upsert(conn: Connection, values: dict[str, object]) -> None:
    changed = {k: v for k, v in values.items() if k != "replica_id"}
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(replicas).values(**values)
        conn.execute(pg.on_conflict_do_update(index_elements=["replica_id"], set_=changed))
    else:
        lite = sqlite.insert(replicas).values(**values)
        conn.execute(lite.on_conflict_do_update(index_elements=["replica_id"], set_=changed))


def list_replicas(store: Store) -> list[Replica]:
    """Every registered replica, most recently seen first (pruned ones excepted)."""
    with store.read() as conn:
        rows = conn.execute(
            select(replicas).order_by(replicas.c.last_seen_at.desc(), replicas.c.replica_id)
        ).mappings()
        return [Replica(**dict(r)) for r in rows]


def live_replicas(store: Store, live_s: float = LIVE_S) -> list[Replica]:
    now = datetime.now(UTC)
    return [r for r in list_replicas(store) if r.live(now, live_s)]
