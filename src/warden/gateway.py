"""The SDK: a ``Gateway`` built from a workflow spec, runs, and governed calls.

    gateway = Gateway.from_spec("workflow.yaml", tools=[lookup_order, issue_refund])
    async with gateway.run(tenant="acme", agent="refund-bot", task="ticket 42") as run:
        result = await run.call("issue_refund", {"order_id": "o1", "amount": 20})

``gateway.sync()`` gives the same API without ``async``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

# Run lives in its own module (warden._run); it and the sync facade are re-exported here,
# where users and the rest of the package import them from.
from warden._run import Run as Run
from warden._sync import SyncGateway as SyncGateway
from warden._sync import SyncRun as SyncRun
from warden.approvals import ApprovalQueue, ApprovalRecord
from warden.errors import InvalidInputError, NotFoundError, UsageError
from warden.ledger import LedgerWriter, VerifyReport, canonical_json, verify
from warden.pipeline import Pipeline, RunState, Services, SwitchBoard
from warden.pipeline._desk import ApprovalDesk
from warden.pipeline._models import Models
from warden.pipeline._pipeline import PENDING, UNSETTLED
from warden.pipeline._services import utc_now
from warden.pipeline._sinks import LedgerSink, OutboxSink, Sink
from warden.pipeline.stages import outcome_of_approval
from warden.policy import Policy, Windows
from warden.policy._typecheck import checked_policy
from warden.results import Failed, FailureKind, Result
from warden.secrets import SecretResolver
from warden.spec import LoadedSpec, Tier, load_spec
from warden.store import Store, default_store_url
from warden.store._tables import runs
from warden.telemetry import Alerts, Rollups, Vault, pii_redactor
from warden.telemetry._redact import stored_identity
from warden.tools import ToolRegistry
from warden.tools._fingerprint import tool_schema_fingerprint

if TYPE_CHECKING:
    from warden.remote import RemoteGateway

ToolsArg = Iterable[Callable[..., Any]] | Mapping[str, Callable[..., Any]]


def compiled_for(loaded: LoadedSpec, tools: ToolsArg) -> tuple[ToolRegistry, Policy]:
    """The tool registry of ``tools`` under ``loaded`` and the policy type-checked against
    it: a mistake fails here, with its line."""
    registry = ToolRegistry.build(loaded, tools)
    return registry, checked_policy(loaded, registry)


#: ``versions`` an agent reports: at most this many keys, each value at most this long
MAX_VERSIONS, MAX_VERSION_LEN = 20, 200


def check_versions(versions: Mapping[str, str] | None) -> dict[str, str]:
    """The versions a run records (``{"prompt": "v3", "model": ...}``), checked:
    ``InvalidInputError`` for anything but a small mapping of short strings."""
    if not versions:
        return {}
    if not isinstance(versions, Mapping) or len(versions) > MAX_VERSIONS:
        raise InvalidInputError(f"versions must be a mapping of at most {MAX_VERSIONS} names")
    out: dict[str, str] = {}
    for key, value in versions.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise InvalidInputError("versions map names to strings, e.g. {\"prompt\": \"v3\"}")
        if len(key) > 64 or len(value) > MAX_VERSION_LEN:
            raise InvalidInputError(
                f"versions: {key[:64]!r} is too long (names up to 64, values up to "
                f"{MAX_VERSION_LEN} characters)"
            )
        out[key] = value
    return out


class Gateway:
    """One workflow, its tools, and the store its runs are recorded in."""

    def __init__(
        self,
        loaded: LoadedSpec,
        tools: ToolsArg,
        *,
        store: Store | str | None = None,
        clock: Callable[[], datetime] = utc_now,
        switch_refresh_s: float = 0.25,
        secrets: SecretResolver | None = None,
        switches: SwitchBoard | None = None,
        sinks: Sequence[Sink] = (),
        vault: Vault | None = None,
        compiled: tuple[ToolRegistry, Policy] | None = None,
    ) -> None:
        """``sinks``: where the stages' events go besides the ledger and the webhook
        outbox (telemetry: traces, metrics, SLO rollups, alerts), in this order.
        ``vault``: tenant keys and sealed values (default: one on ``store`` under the
        master key of ``warden.telemetry.master_key()``).
        ``compiled``: the registry and checked policy of this spec and these tools, built
        already (``compiled_for``) by a caller that makes many gateways of one workflow
        (the eval runner makes one per trial); both hold no state of a gateway."""
        registry, policy = compiled or compiled_for(loaded, tools)
        self.store = store if isinstance(store, Store) else Store(store or default_store_url())
        ledger = LedgerWriter(self.store)
        # SLO rollups and alerts are on for every gateway: one given in ``sinks`` (the
        # server shares one per process) is used, else this gateway makes its own.
        extra = list(sinks)
        rollups = next((s for s in extra if isinstance(s, Rollups)), None)
        self._owns_rollups = rollups is None
        if rollups is None:
            rollups = Rollups(self.store, clock=clock, alerts=Alerts(self.store, clock=clock))
            extra.append(rollups)
        if rollups.alerts is not None:
            rollups.alerts.watch(loaded)
        self.rollups = rollups
        vault = vault or Vault(self.store)
        self.svc = Services(
            loaded=loaded,
            registry=registry,
            policy=policy,
            store=self.store,
            ledger=ledger,
            # One board per process where the caller shares one (the server does): every
            # check of a call, the last one before the side effect included, sees one view.
            switches=switches
            or SwitchBoard(self.store, ledger, refresh_s=switch_refresh_s, vault=vault),
            approvals=ApprovalQueue(self.store, ledger, vault=vault),
            windows=Windows(self.store, policy.windows),
            clock=clock,
            secrets=secrets or SecretResolver(),
            sinks=[LedgerSink(ledger), OutboxSink(loaded.spec.name, clock, ledger), *extra],
            vault=vault,
            pii=pii_redactor(loaded.spec.pii, vault, ledger.defer),
        )
        #: recorded on every run_started: the tools' names, effects and schemas, hashed
        self.tool_schema_fingerprint = tool_schema_fingerprint(registry)
        if loaded.spec.models:
            self.svc.models = Models(
                loaded, self.store, self.svc.secrets, clock, vault=vault, pii=self.svc.pii
            )
        self.pipeline = Pipeline(self.svc)
        self.desk = ApprovalDesk(self.svc, load_run=lambda run_id: self._load_run(run_id)[0])
        # Runs opened by this process and still referenced: a resumed run or an approved
        # action of one of them shares its state (counters, provenance), so what the
        # approved action taught the run reaches the object that requested it.
        self._live: weakref.WeakValueDictionary[str, RunState] = weakref.WeakValueDictionary()
        # Runs served here whose stored state this process wrote last (see resume_run).
        self._resumed: OrderedDict[str, tuple[int, RunState, dict[str, Any]]] = OrderedDict()
        self._resumed_lock = threading.Lock()  # kept by the store thread, taken by the loop

    @classmethod
    def from_spec(
        cls,
        path: str | Path,
        *,
        tools: ToolsArg,
        store: Store | str | None = None,
        clock: Callable[[], datetime] = utc_now,
        switch_refresh_s: float = 0.25,
        secrets: SecretResolver | None = None,
        switches: SwitchBoard | None = None,
        sinks: Sequence[Sink] = (),
        vault: Vault | None = None,
    ) -> Gateway:
        return cls(
            load_spec(path),
            tools,
            store=store,
            clock=clock,
            switch_refresh_s=switch_refresh_s,
            secrets=secrets,
            switches=switches,
            sinks=sinks,
            vault=vault,
        )

    @staticmethod
    def connect(
        url: str, *, api_key: str, workflow: str | None = None, tenant: str | None = None
    ) -> RemoteGateway:
        """A client of ``warden serve`` with the same run/call API and typed results."""
        from warden.remote import RemoteGateway

        return RemoteGateway(url, api_key=api_key, workflow=workflow, tenant=tenant)

    # -- components -----------------------------------------------------------------

    @property
    def spec(self) -> LoadedSpec:
        return self.svc.loaded

    @property
    def switches(self) -> SwitchBoard:
        return self.svc.switches

    @property
    def approvals(self) -> ApprovalQueue:
        return self.svc.approvals

    @property
    def ledger(self) -> LedgerWriter:
        return self.svc.ledger

    def flush(self) -> None:
        """Write what the ledger and the SLO rollups buffered."""
        self.svc.ledger.flush()
        self.rollups.flush()

    def verify_ledger(self) -> VerifyReport:
        self.flush()
        return verify(self.store)

    def close(self) -> None:
        """Stop the background work and release the store. A gateway that called models
        from an event loop should be closed with ``aclose`` on that loop (their HTTP
        connections belong to it)."""
        self.svc.switches.close()
        self.svc.ledger.close()
        if self._owns_rollups:
            self.rollups.close()
        self.store.dispose()

    async def aclose(self) -> None:
        """``close``, after closing the model upstreams' connections of this event loop."""
        if self.svc.models is not None:
            await self.svc.models.aclose()
        self.close()

    def sync(self) -> SyncGateway:
        return SyncGateway(self)

    # -- runs -------------------------------------------------------------------------

    def _principal(self, agent: str) -> frozenset[str]:
        agents = self.svc.loaded.spec.agents
        if agents and agent not in agents:
            raise UsageError(
                f"agent {agent!r} is not declared in the spec's agents ({', '.join(sorted(agents))})"
            )
        return frozenset(agents[agent].scopes) if agent in agents else frozenset()

    def _allowed_tools(self, task_type: str | None) -> frozenset[str] | None:
        if task_type is None:
            return None
        found = [t for t in self.svc.loaded.spec.task_types if t.name == task_type]
        if not found:
            raise UsageError(f"unknown task type {task_type!r}")
        return frozenset(found[0].allowed_tools) or None

    def open_run(
        self,
        *,
        tenant: str,
        agent: str,
        task: str,
        task_type: str | None = None,
        end_user: str | None = None,
        opened_by: str | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> Run:
        """Open a run. ``end_user``: on whose behalf (bounds approval requests per person);
        ``opened_by``: the caller's identity (it may not approve the run's actions);
        ``versions``: what the agent reports it runs (``{"prompt": "v3", "model": ...}``),
        recorded on ``run_started``."""
        if not tenant or not agent:
            raise UsageError("a run needs a tenant and an agent")
        checked_versions = check_versions(versions)
        spec = self.svc.loaded.spec
        if (
            end_user is None
            and "max_requests_per_end_user_per_day" in spec.escalation.model_fields_set
        ):
            # Without it the per-person cap could be bypassed by leaving it out.
            raise InvalidInputError(
                f"workflow {spec.name!r} caps approval requests per end user "
                "(escalation.max_requests_per_end_user_per_day): open the run with end_user"
            )
        allowed = self._allowed_tools(task_type)
        scopes = self._principal(agent)
        state = RunState(
            run_id="run_" + uuid.uuid4().hex[:24],
            tenant=tenant,
            workflow=spec.name,
            agent=agent,
            scopes=scopes,
            tier=spec.tier,
            task=task,
            task_type=task_type,
            allowed_tools=allowed,
            end_user=end_user,
            opened_by=opened_by,
            principal={"agent": agent, "scopes": sorted(scopes), "key": None},
        )
        now = self.svc.clock()
        if self.svc.vault is not None:
            # made now, not inside a transaction of a later call that seals a value
            self.svc.vault.token_key(tenant)
        stored_task = task if self.svc.pii is None else self.svc.pii.redact_text(tenant, task)
        stored_user = stored_identity(self.svc.pii, tenant, end_user)
        stored_opener = stored_identity(self.svc.pii, tenant, opened_by)
        # The row holds them tokenized; the raw ones travel sealed in the run's state, so
        # a replica that resumes the run gives its rules what the run was opened with.
        first_state = None
        if self.svc.vault is not None and (stored_user, stored_opener) != (end_user, opened_by):
            first_state = self.svc.vault.seal(tenant, canonical_json(state.counters()))
        with self.svc.ledger.transaction() as conn:
            conn.execute(
                insert(runs).values(
                    run_id=state.run_id,
                    tenant=tenant,
                    workflow=spec.name,
                    workflow_version=spec.version,
                    spec_fingerprint=self.svc.loaded.fingerprint,
                    agent=agent,
                    task=stored_task,
                    task_type=task_type,
                    # tokenized where they hold PII (one identity, one stored value:
                    # the per-end-user cap and budgets still compare them)
                    end_user=stored_user,
                    opened_by=stored_opener,
                    state=first_state,
                    tier=spec.tier.value,
                    status="running",
                    started_at=now,
                )
            )
            self.svc.emit(
                state.run_id,
                tenant,
                "run_started",
                {
                    "workflow": spec.name,
                    "version": spec.version,
                    "spec_fingerprint": self.svc.loaded.fingerprint,
                    "policy_fingerprint": self.svc.policy.fingerprint,
                    "agent": agent,
                    "scopes": sorted(scopes),
                    "task": task,
                    "task_type": task_type,
                    "tier": spec.tier.value,
                    "tool_schema_fingerprint": self.tool_schema_fingerprint,
                    **({"versions": checked_versions} if checked_versions else {}),
                },
            )
        self._live[state.run_id] = state
        return Run(self, state)

    @asynccontextmanager
    async def run(
        self,
        *,
        tenant: str,
        agent: str,
        task: str,
        task_type: str | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Run]:
        run = self.open_run(
            tenant=tenant, agent=agent, task=task, task_type=task_type, versions=versions
        )
        try:
            yield run
        except BaseException:
            run.finish("error")
            raise
        else:
            run.finish("completed")

    def _load_run(
        self, run_id: str, row: Mapping[Any, Any] | None = None, *, claimed: bool = False
    ) -> tuple[RunState, dict[str, Any], int]:
        """The run's state, the stored counters it started from, and their version."""
        if row is None:
            with self.store.read() as conn:
                found = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings()
                row = found.first()
        if row is None or row["workflow"] != self.svc.workflow:
            raise NotFoundError(f"no run {run_id!r} in workflow {self.svc.workflow!r}")
        agents = self.svc.loaded.spec.agents
        scopes = frozenset(agents[row["agent"]].scopes) if row["agent"] in agents else frozenset()
        state = RunState(
            run_id=run_id,
            tenant=row["tenant"],
            workflow=row["workflow"],
            agent=row["agent"],
            scopes=scopes,
            tier=Tier(row["tier"]),
            task=row["task"],
            task_type=row["task_type"],
            allowed_tools=self._allowed_tools(row["task_type"]),
            end_user=row["end_user"],
            opened_by=row["opened_by"],
            principal={"agent": row["agent"], "scopes": sorted(scopes), "key": None},
        )
        if row["state"]:
            stored = row["state"]
            if self.svc.vault is not None:
                stored = self.svc.vault.unseal(row["tenant"], stored)
            state.restore(json.loads(stored))
        # A claimed row carries the step its call took; the pipeline counts it again.
        state.steps = int(row["steps"]) - 1 if claimed else int(row["steps"])
        if row["status"] != "running":
            state.stopped = state.stopped or f"the run is {row['status']}"
        return state, state.counters(), int(row["state_version"])

    def resume_run(
        self, run_id: str, *, row: Mapping[Any, Any] | None = None, claimed: bool = False
    ) -> Run:
        """A run opened earlier, possibly by another process, with its counters restored.

        The server uses this so that consecutive calls of one run may reach any replica:
        it takes the call's step with ``pipeline.claim_step`` (pass that row and
        ``claimed=True``) and calls ``run.save()`` after the call.
        """
        live = self._live.get(run_id) if row is None else None
        if live is not None:
            return Run(self, live)
        # A run's calls usually reach the process that served its last call: if the stored
        # state is still the version that call saved, its RunState is taken over as it is,
        # without parsing and restoring it again (profiled over HTTP: ~130 µs a call, more
        # for a run that read much untrusted text). Taken out while a call uses it, so two
        # concurrent calls of one run never share one; any other version is read afresh.
        cached = None
        if row is not None and claimed:
            with self._resumed_lock:
                cached = self._resumed.pop(run_id, None)
        if (
            cached is not None
            and row is not None
            and cached[0] == int(row["state_version"])
            and row["status"] == "running"
        ):
            version, state, base = cached
            state.steps = int(row["steps"]) - 1
        else:
            state, base, version = self._load_run(run_id, row, claimed=claimed)
        run = Run(self, state, base=base, version=version, reusable=claimed)
        run.closed = state.stopped is not None and state.stopped.startswith("the run is ")
        return run

    # -- approvals --------------------------------------------------------------------

    async def approve(
        self,
        approval_id: str,
        *,
        approver: str,
        rationale: str,
        args: dict[str, Any] | None = None,
        roles: Iterable[str] = (),
        on_behalf_of: str | None = None,
    ) -> ApprovalRecord:
        """Approve a pending action, or approve it with edited ``args``.

        ``roles``: the approval roles ``approver`` holds; deciding needs the approval's
        current role (``ForbiddenError`` otherwise). Whoever proposed the action or opened
        its run cannot decide it. ``on_behalf_of``: the human a bridge (chat, e-mail)
        decides for; recorded, and held to the same separation of duties. Edited args are
        re-validated and re-evaluated against the policy first (see ``ApprovalDesk``).
        """
        return await self.desk.approve(
            approval_id,
            approver=approver,
            rationale=rationale,
            args=args,
            roles=roles,
            on_behalf_of=on_behalf_of,
        )

    async def reject(
        self,
        approval_id: str,
        *,
        approver: str,
        rationale: str,
        roles: Iterable[str] = (),
        on_behalf_of: str | None = None,
    ) -> ApprovalRecord:
        """Reject a pending action (the same rules as ``approve`` on who may decide)."""
        return await self.desk.reject(
            approval_id,
            approver=approver,
            rationale=rationale,
            roles=roles,
            on_behalf_of=on_behalf_of,
        )

    def expire_overdue(self) -> list[ApprovalRecord]:
        """Apply the workflow's timeout fallback to approvals past their deadline."""
        return self.desk.expire_overdue()

    async def execute_approved(
        self, approval_id: str, *, wait: float = 0.0, actor: str | None = None
    ) -> Result:
        """Execute an approved action exactly once, in this process or any other.

        The action goes through the whole pipeline again (kill switches, run caps,
        identity, scopes and schema are checked at this moment); the approval stage lets
        it through. Safe to call from several processes at once, and again after a
        restart: one caller executes, the others get its result (``replayed=True``),
        ``in_progress`` or ``Pending``. What the execution taught the run (provenance of the
        tool's output, retries) reaches the run's next call, in this process or another.
        """
        loop = asyncio.get_running_loop()
        until = loop.time() + max(wait, 0.0)
        record = self.svc.approvals.get(approval_id)
        if record.state in ("pending", "executing") and wait > 0:
            waiting = PENDING if record.state == "pending" else UNSETTLED - {"approved"}
            record = await self.pipeline.wait_for_decision(approval_id, wait, while_in=waiting)
        answer = outcome_of_approval(record, record.action_id)
        if answer is not None:
            return answer
        run = self.resume_run(record.run_id)
        result = await self.pipeline.resume(run.state, record, actor)
        run.save()
        left = until - loop.time()
        if isinstance(result, Failed) and result.kind is FailureKind.IN_PROGRESS and left > 0:
            # Another caller claimed it first: wait for its outcome, as promised.
            record = await self.pipeline.wait_for_decision(
                approval_id, left, while_in=UNSETTLED - {"approved"}
            )
            return outcome_of_approval(record, record.action_id) or result
        return result
