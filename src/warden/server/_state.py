"""What one server process holds: the store, a gateway per workflow, keys, limits."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from warden.approvals import ApprovalWaiter
from warden.auth import KeyStore, Principal, RateLimiter
from warden.errors import UsageError
from warden.gateway import Gateway, Run
from warden.ledger import LedgerWriter, OtlpLogSink
from warden.notify import load_webhook_targets
from warden.pipeline import SwitchBoard
from warden.pipeline._runs import (
    claim_step,
    claim_step_async,
    save_counters,
    save_counters_async,
)
from warden.pipeline._sinks import Sink
from warden.secrets import SecretResolver
from warden.server._settings import ServerSettings
from warden.store import Store
from warden.store._engine import WouldWait
from warden.telemetry import Alerts, Rollups, Telemetry
from warden.tools._factory import load_factory

P = ParamSpec("P")
T = TypeVar("T")


class ServerState:
    def __init__(self, settings: ServerSettings, telemetry: Telemetry | None = None) -> None:
        """``telemetry``: what this process exports (default: as the settings and the
        ``OTEL_*`` variables say)."""
        self.settings = settings
        self.store = Store(settings.store, create=settings.auto_migrate)
        #: signs the ledger checkpoints (set at start-up when ``ledger_key`` is configured)
        self.ledger_key: Ed25519PrivateKey | None = None
        if not settings.auto_migrate:
            self.store.check_schema()
        self.secrets = SecretResolver(Path(settings.secrets_file) if settings.secrets_file else None)
        self.webhooks = load_webhook_targets(Path(settings.webhooks_file)) if settings.webhooks_file else []
        self.ledger = LedgerWriter(self.store)
        # One board per process, shared by every gateway: a switch flipped through this
        # process applies at once, at every check of a call.
        self.switches = SwitchBoard(self.store, self.ledger, refresh_s=settings.switch_refresh_s)
        self.gateways: dict[str, Gateway] = {}
        #: telemetry sinks of this process (traces, metrics, SLO rollups, alerts): every
        #: gateway hands its events to them after the ledger and the outbox
        self.alerts = Alerts(self.store)
        self.rollups = Rollups(self.store, alerts=self.alerts)
        self.sinks: list[Sink] = [self.rollups]
        #: traces (OTEL_* variables) and metrics (settings) of this process's gateways
        self.telemetry = telemetry if telemetry is not None else Telemetry.for_server(settings)
        otlp_logs = OtlpLogSink.from_env()  # OTEL_* variables; off by default
        if otlp_logs is not None:
            self.sinks.append(otlp_logs)
        specs, tools = settings.specs, settings.tools
        if not specs:
            from warden.demo import example_dir

            specs = [str(example_dir() / "workflow.yaml")]
            tools = ["warden.demo:serve_tools"]
        if len(tools) != len(specs):
            raise UsageError("give one --tools factory per --spec, in the same order")
        for spec_path, factory_ref in zip(specs, tools, strict=True):
            gateway = Gateway.from_spec(
                spec_path,
                tools=load_factory(factory_ref)(),
                store=self.store,
                secrets=self.secrets,
                switches=self.switches,
                sinks=self.sinks,
            )
            name = gateway.spec.spec.name
            if name in self.gateways:
                raise UsageError(f"two specs define workflow {name!r}")
            self.gateways[name] = gateway
            self.telemetry.instrument(gateway)
        if self.telemetry.metrics is not None:
            self.telemetry.metrics.watch_ledger(self.ledger)
        self.keys = KeyStore(self.store, cache_s=settings.key_cache_s)
        self.limiter = RateLimiter(self.store, settings.key_rate_limit)
        #: wakes long-polls on approvals (shared with the gateways on this store)
        self.waiter = ApprovalWaiter.for_store(self.store)
        # Store work of request handlers runs here, off the event loop: a statement that
        # waits for a lock (SQLite's write lock, a PostgreSQL row lock) then holds up only
        # its own request. Bounded, so that on PostgreSQL each thread's own autocommit
        # connection (store.autocommit) stays a bounded number of sessions.
        self._store_threads = ThreadPoolExecutor(
            max_workers=settings.store_threads, thread_name_prefix="warden-store"
        )

    def refused(self, principal: Principal, why: str) -> None:
        """A key refused another tenant's or agent's objects: an ``unauthorized_attempt``
        of its tenant (``server._deps.Refused``)."""
        self.rollups.refused(principal.tenant, why)

    @property
    def workflow_names(self) -> tuple[str, ...]:
        return tuple(self.gateways)

    def gateway(self, workflow: str) -> Gateway:
        found = self.gateways.get(workflow)
        if found is None:
            from warden.errors import NotFoundError

            raise NotFoundError(
                f"no workflow {workflow!r}; served: {', '.join(sorted(self.gateways))}"
            )
        return found

    async def run_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` in a store thread, awaited from the event loop."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._store_threads, call)

    async def run_store(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Store work on a call's hot path: done on the loop where the store can do it
        without waiting (``Store.without_waiting_soon``: SQLite with its write lock free,
        now or within a few ms), else in a store thread like ``run_sync``. ``fn`` must
        change nothing before a statement that could wait, so that a retry starts clean."""
        try:
            return await self.store.without_waiting_soon(fn, *args, **kwargs)
        except WouldWait:
            return await self.run_sync(fn, *args, **kwargs)

    async def claim_step(
        self, run_id: str, *, workflows: Collection[str], tenant: str | None, agent: str | None
    ) -> dict[str, Any] | None:
        """Take a governed call's step (``pipeline._runs.claim_step``) from the loop: on
        PostgreSQL awaited on the loop's own connection, on SQLite done at once when the
        write lock is free (else in a store thread)."""
        if not self.store.is_sqlite:
            return await claim_step_async(
                self.store, run_id, workflows=workflows, tenant=tenant, agent=agent
            )
        return await self.run_store(
            claim_step, self.store, run_id, workflows=workflows, tenant=tenant, agent=agent
        )

    async def save_run(self, run: Run) -> None:
        """``run.save()`` from the loop, as ``claim_step``; a save that has to merge with
        another call's counters (it takes a row lock) goes to a store thread."""
        if self.store.is_sqlite:
            await self.run_store(run.save)
            return
        unsaved = run.unsaved()
        if unsaved is None:
            run.save()  # nothing to write: only hands the state to the run's next call
            return
        stored = await save_counters_async(self.store, run.run_id, **unsaved)
        if stored is None:
            stored = await self.run_sync(save_counters, self.store, run.run_id, **unsaved)
        run.saved(*stored, unsaved["mine"])

    def close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:  # exporters: send what is queued
                close()
        self.switches.close()
        self.waiter.close()
        self._store_threads.shutdown(wait=True)
        for gateway in self.gateways.values():
            gateway.svc.ledger.close()
        self.rollups.close()
        self.ledger.close()
        self.telemetry.close()
        self.store.dispose()
