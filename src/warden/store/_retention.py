"""Retention: the classes that say how long a tenant's ledger stays in the store, and the
cleanup of operational rows past their use (``warden store prune``, the server's loop).

What each table's rows are for decides when they may go (store/_tables.py):

- ``window_entries`` feed ``window.<name>`` sums over the spec's ``period``: an entry older
  than the longest period of any loaded window can no longer change a decision.
- ``idempotency`` answers a repeated key with the first call's result, across runs of the
  tenant (an agent restarted with a new run may retry with the same key). Only ``done``
  records of finished runs, older than ``idempotency_days``, go; ``started`` and ``unknown``
  ones wait for a human (``warden ledger settle``) however old they are.
- ``outbox`` rows are notifications to deliver: ``delivered`` and ``failed`` ones (no
  further attempt) older than ``outbox_days`` go with their ``webhook_deliveries``;
  ``pending`` ones never.
- ``rate_counters`` older than a day, ``model_cache`` entries past their expiry.

The ledger itself leaves the store only through ``warden ledger archive``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, delete, not_, or_, select

from warden.store._engine import Store
from warden.store._tables import (
    idempotency,
    model_cache,
    outbox,
    rate_counters,
    runs,
    webhook_deliveries,
    window_entries,
)

log = logging.getLogger("warden.store")


class RetentionClass(BaseModel):
    """How long a tenant's ledger events stay in the store, and how long their archive
    must be kept."""

    model_config = ConfigDict(extra="forbid")

    #: days events stay in the store before ``warden ledger archive --retention`` moves them
    #: to an archive; None: never (the full ledger stays)
    store_days: int | None = Field(default=None, ge=1)
    #: years the archive must be kept: written into its header as ``retain_until``
    archive_years: int | None = Field(default=None, ge=1, le=100)


def _default_classes() -> dict[str, RetentionClass]:
    return {
        "staging": RetentionClass(),
        "production": RetentionClass(store_days=365),
        "incident": RetentionClass(store_days=90, archive_years=7),
    }


class RetentionSettings(BaseModel):
    """``WARDEN_RETENTION`` (JSON) or ``retention:`` in the server's configuration.

    Classes are assigned per tenant: the ledger is chained, exported, verified and archived
    by tenant, and one tenant's events of the shared switch stream do not belong to any one
    workflow."""

    model_config = ConfigDict(extra="forbid")

    classes: dict[str, RetentionClass] = Field(default_factory=_default_classes)
    #: tenant -> class name; tenants not named get ``default``
    tenants: dict[str, str] = Field(default_factory=dict)
    default: str = "staging"
    #: secret reference (env:NAME or file:NAME) of the archives' encryption secret
    archive_secret: str | None = Field(default=None, pattern=r"^(env|file):[A-Za-z0-9_.\-]+$")
    #: days ``done`` idempotency records of finished runs are kept (retries across runs)
    idempotency_days: int = Field(default=30, ge=1)
    #: days delivered or failed notifications and their delivery attempts are kept
    outbox_days: int = Field(default=14, ge=1)
    #: window entries are kept this long when no loaded spec declares a longer period
    window_days: int = Field(default=31, ge=1)
    #: seconds between the server's cleanup passes (0: the server does not prune)
    prune_every_s: float = Field(default=3600.0, ge=0)

    def class_of(self, tenant: str) -> tuple[str, RetentionClass]:
        name = self.tenants.get(tenant, self.default)
        found = self.classes.get(name)
        if found is None:
            from warden.errors import UsageError

            raise UsageError(
                f"retention class {name!r} (tenant {tenant}) is not defined; classes: "
                + ", ".join(sorted(self.classes))
            )
        return name, found


@dataclass(frozen=True)
class PruneReport:
    window_entries: int
    idempotency: int
    outbox: int
    webhook_deliveries: int
    rate_counters: int
    model_cache: int

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def prune(
    store: Store,
    settings: RetentionSettings,
    *,
    now: datetime | None = None,
    window_keep: timedelta | None = None,
    dry_run: bool = False,
) -> PruneReport:
    """Delete what is past its use (see the module docstring). ``window_keep``: the longest
    window period of the loaded specs, if longer than ``settings.window_days``."""
    now = now or datetime.now(UTC)
    keep = max(timedelta(days=settings.window_days), window_keep or timedelta(0))
    now_us = int(now.timestamp() * 1_000_000)
    window_cut = now_us - int(keep.total_seconds() * 1_000_000)
    idem_cut = now - timedelta(days=settings.idempotency_days)
    outbox_cut = now - timedelta(days=settings.outbox_days)
    open_runs = select(runs.c.run_id).where(runs.c.status == "running")
    gone_outbox = and_(outbox.c.state.in_(("delivered", "failed")), outbox.c.created_at < outbox_cut)
    statements = {
        "window_entries": delete(window_entries).where(window_entries.c.ts_us < window_cut),
        "idempotency": delete(idempotency).where(
            idempotency.c.state == "done",
            idempotency.c.created_at < idem_cut,
            not_(idempotency.c.run_id.in_(open_runs)),
        ),
        # Deliveries first: they name their outbox row.
        "webhook_deliveries": delete(webhook_deliveries).where(
            or_(
                webhook_deliveries.c.outbox_id.in_(select(outbox.c.id).where(gone_outbox)),
                and_(
                    webhook_deliveries.c.at < outbox_cut,
                    not_(webhook_deliveries.c.outbox_id.in_(select(outbox.c.id))),
                ),
            )
        ),
        "outbox": delete(outbox).where(gone_outbox),
        "rate_counters": delete(rate_counters).where(
            rate_counters.c.window_start < int(now.timestamp()) - 86400
        ),
        "model_cache": delete(model_cache).where(model_cache.c.expires_us < now_us),
    }
    counts: dict[str, int] = {}
    with store.write() as conn:
        for name, statement in statements.items():
            # A dry run deletes too, inside a transaction it then rolls back: the counts
            # are exactly what a real run would delete now.
            counts[name] = max(conn.execute(statement).rowcount, 0)
        if dry_run:
            conn.rollback()
    return PruneReport(**counts)


async def prune_loop(
    store: Store,
    settings: RetentionSettings,
    *,
    window_keep: timedelta | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """``prune`` every ``settings.prune_every_s`` seconds until ``stop`` is set (``warden
    serve``). Any replica may run it: each statement deletes what is past its use at that
    moment, so two replicas pruning at once delete nothing twice. Store work runs in a
    thread; a failure is logged and retried at the next tick."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.prune_every_s)
            return
        except TimeoutError:
            pass
        try:
            report = await asyncio.to_thread(prune, store, settings, window_keep=window_keep)
            if any(report.to_json().values()):
                log.info("pruned %s", report.to_json())
        except Exception:
            log.exception("store prune failed; retrying in %.0f s", settings.prune_every_s)
