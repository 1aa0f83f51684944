"""Kill switches at global, tenant, workflow and tool scope, persisted in the store.

Every process re-reads the (tiny) switch table every ``refresh_s`` seconds, so a switch
flipped anywhere stops the next call everywhere within that interval, with no restart.
The re-read happens in a background thread, so a governed call never waits on the store
for it (on a busy SQLite store, a read on the event loop could wait for a pooled
connection held by writers); if that thread falls behind by ``4 * refresh_s`` (the store
is unreachable, say), the call re-reads the table itself and fails with the store rather
than pass on a stale view: fail closed.

A board can also ``register`` its process in the replica registry (``warden serve`` does, for
every worker): the refresh thread then writes a heartbeat with the time of its last
successful read, at most once a second, so the console can tell which replicas have seen a
switch (warden.pipeline._replicas).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select, update

from warden import notify
from warden.errors import UsageError
from warden.ledger import LedgerWriter
from warden.pipeline._replicas import Heartbeat, Kind
from warden.store import Store
from warden.store._ops import insert_if_absent
from warden.store._tables import switches, utc_text
from warden.telemetry._redact import SYSTEM_TENANT, redact_record
from warden.telemetry._vault import Vault

SWITCH_STREAM = "switches"
log = logging.getLogger("warden.switches")


class Scope(StrEnum):
    GLOBAL = "global"
    TENANT = "tenant"
    WORKFLOW = "workflow"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class Switch:
    scope: Scope
    target: str
    active: bool
    set_by: str
    reason: str
    set_at: datetime

    def describe(self) -> str:
        where = (
            "everything" if self.scope is Scope.GLOBAL else f"{self.scope.value} {self.target!r}"
        )
        return f"kill switch on {where}, set by {self.set_by} at {self.set_at:%Y-%m-%d %H:%M:%S}Z: {self.reason}"


class SwitchBoard:
    def __init__(
        self,
        store: Store,
        ledger: LedgerWriter,
        *,
        refresh_s: float = 0.25,
        vault: Vault | None = None,
    ) -> None:
        """``vault``: whose tenant keys tokenize the PII in who changed a switch and why
        (default: one over ``store``, made on the first change)."""
        self._store = store
        self._vault = vault
        self._ledger = ledger
        self._refresh_s = refresh_s
        self._active: dict[tuple[Scope, str], Switch] = {}
        self._loaded_at = -1e9
        #: bumped by every change made here: a re-read that began before one is not fresh
        self._changes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: when the last complete read of the table began (wall clock)
        self._read_at: datetime | None = None
        self._heartbeat: Heartbeat | None = None

    def register(self, kind: Kind = "sdk") -> str:
        """Put this process in the replica registry and start the refresh thread now (not
        at the first call): its heartbeat says when this process last read the switches.
        Returns the replica id. ``warden serve`` registers every worker as ``serve``; a
        long-lived SDK gateway may register itself (``gateway.switches.register()``)."""
        with self._lock:
            if self._heartbeat is None:
                self._heartbeat = Heartbeat(self._store, kind)
            replica_id = self._heartbeat.replica_id
        self._start()
        return replica_id

    def _beat(self) -> None:
        heartbeat = self._heartbeat
        if heartbeat is not None and not self._stop.is_set():
            heartbeat.beat(self._read_at)

    def set(
        self, scope: Scope | str, target: str | None, *, active: bool, by: str, reason: str
    ) -> Switch:
        scope = Scope(scope)
        if scope is Scope.GLOBAL:
            target = "*"
        elif not target:
            raise UsageError(f"a {scope.value} switch needs a target ({scope.value} name)")
        if not by.strip() or not reason.strip():
            raise UsageError("a switch change needs who (by) and why (reason)")
        # Who and why are free text (an e-mail address, a ticket quoting a customer):
        # tokenized before anything is stored, under the target tenant's key, or the
        # system tenant's for a switch that belongs to no tenant.
        if self._vault is None:
            self._vault = Vault(self._store)
        owner = target if scope is Scope.TENANT else SYSTEM_TENANT
        said = redact_record(self._vault, owner, {"by": by, "reason": reason})
        by, reason = said["by"], said["reason"]
        with self._ledger.transaction() as conn:
            # Taken inside the transaction (after any wait for the write lock), so that
            # ``set_at`` precedes the commit by little: replicas count a switch as seen
            # by a read that began after it (warden.pipeline._replicas.COMMIT_MARGIN).
            switch = Switch(scope, target, active, by, reason, datetime.now(UTC))
            values = {
                "active": active,
                "set_by": by,
                "reason": reason,
                "set_at": switch.set_at,
            }
            if not insert_if_absent(
                conn, switches, {"scope": scope.value, "target": target, **values}
            ):
                conn.execute(
                    update(switches)
                    .where(switches.c.scope == scope.value, switches.c.target == target)
                    .values(**values)
                )
            self._ledger.append(
                SWITCH_STREAM,
                target if scope is Scope.TENANT else "*",
                None,
                "switch_changed",
                {
                    "scope": scope.value,
                    "target": target,
                    "active": active,
                    "by": by,
                    "reason": reason,
                },
            )
            # the ``switch_changed`` webhook, committed with the change (docs/webhooks.md)
            notify.enqueue(
                conn,
                tenant=target if scope is Scope.TENANT else "*",
                kind="switch_changed",
                now=switch.set_at,
                payload={
                    "scope": scope.value,
                    "target": target,
                    "active": active,
                    "by": by,
                    "reason": reason,
                    "set_at": utc_text(switch.set_at),
                },
            )
        # This process sees its own change at once: the next call re-reads, and a re-read
        # that read the table before this commit is not taken as fresh (fail closed).
        self._changes += 1
        self._loaded_at = -1e9
        return switch

    def list(self) -> list[Switch]:
        with self._store.read() as conn:
            rows = conn.execute(
                select(switches).order_by(switches.c.scope, switches.c.target)
            ).mappings()
            return [
                Switch(
                    Scope(r["scope"]),
                    r["target"],
                    r["active"],
                    r["set_by"],
                    r["reason"],
                    r["set_at"],
                )
                for r in rows
            ]

    def _refresh(self, *, every_s: float | None = None) -> None:
        with self._lock:
            if time.monotonic() - self._loaded_at < (
                self._refresh_s if every_s is None else every_s
            ):
                return
            changes = self._changes
            began = datetime.now(UTC)
            self._active = {(s.scope, s.target): s for s in self.list() if s.active}
            if self._changes == changes:
                self._loaded_at = time.monotonic()
                self._read_at = began

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=_refresh_loop,
                args=(weakref.ref(self), self._stop, self._refresh_s),
                name="warden-switches",
                daemon=True,
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the background re-reads (the board still answers, reading on demand); waits
        for a re-read under way, so that none is left holding a connection of a store that
        is about to be disposed."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            try:
                heartbeat.leave()
            except Exception:  # the row ages out of "live" instead
                log.warning("could not remove this replica from the registry", exc_info=True)

    def blocking(self, tenant: str, workflow: str, tool: str) -> Switch | None:
        """The active switch that stops this call, if any."""
        age = time.monotonic() - self._loaded_at
        if age >= self._refresh_s:
            if self._thread is None:
                self._start()
            if age >= 4 * self._refresh_s or self._stop.is_set():
                self._refresh()  # never loaded, just changed here, or the thread is behind
        active = self._active
        if not active:
            return None
        for key in (
            (Scope.GLOBAL, "*"),
            (Scope.TENANT, tenant),
            (Scope.WORKFLOW, workflow),
            (Scope.TOOL, tool),
        ):
            found = active.get(key)
            if found is not None:
                return found
        return None


def _refresh_loop(ref: weakref.ref[SwitchBoard], stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        board = ref()
        if board is None:
            return
        try:
            board._refresh(every_s=every_s / 2)
            board._beat()
        except Exception:
            # The calls see the view age and re-read (and fail) themselves: fail closed.
            # No heartbeat either: this replica drops out of "live" while it cannot read.
            log.warning("kill switches could not be re-read; will retry", exc_info=True)
        del board
