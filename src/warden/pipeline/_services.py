"""What the stages share: the spec, the store-backed components, the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from warden.approvals import ApprovalQueue
from warden.events import EventKind
from warden.ledger import LedgerWriter
from warden.pipeline._execute import Executor
from warden.pipeline._idempotency import Settling
from warden.pipeline._locks import ResourceLocks
from warden.pipeline._models import Models
from warden.pipeline._sinks import LedgerSink, OutboxSink, Sink
from warden.pipeline._switches import SwitchBoard
from warden.policy import Policy, Windows
from warden.policy._context import model_context
from warden.secrets import SecretResolver
from warden.spec import LoadedSpec
from warden.store import Store
from warden.telemetry import PiiRedactor, Vault
from warden.tools import ToolDef, ToolRegistry


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    loaded: LoadedSpec
    registry: ToolRegistry
    policy: Policy
    store: Store
    ledger: LedgerWriter
    switches: SwitchBoard
    approvals: ApprovalQueue
    windows: Windows
    clock: Callable[[], datetime] = utc_now
    secrets: SecretResolver = field(default_factory=SecretResolver)
    tool_contexts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the ``model`` value rules see, per tool (``NO_MODEL`` for tools)
    model_contexts: dict[str, dict[str, Any]] = field(default_factory=dict)
    sinks: list[Sink] = field(default_factory=list)
    settling: Settling = field(default_factory=Settling)
    #: the declared models (upstreams, prices, budgets); None when the spec declares none
    models: Models | None = None
    #: tenant keys and sealed values (None: nothing sealed, nothing tokenized)
    vault: Vault | None = None
    #: tokenizes PII in every event before the sinks see it (None: the spec's
    #: ``pii.enabled`` is false)
    pii: PiiRedactor | None = None
    executor: Executor = field(init=False)
    locks: ResourceLocks = field(init=False)

    def __post_init__(self) -> None:
        for tool in self.registry:
            self.tool_contexts[tool.name] = _tool_context(tool)
            self.model_contexts[tool.name] = model_context(self.loaded.spec.models, tool.name)
        self.executor = Executor(self.switches, self.secrets, self.workflow)
        self.locks = ResourceLocks(self.store)
        if not self.sinks:
            self.sinks = [LedgerSink(self.ledger), OutboxSink(self.workflow, self.clock)]

    @property
    def workflow(self) -> str:
        return self.loaded.spec.name

    def emit(
        self,
        run_id: str,
        tenant: str,
        kind: EventKind,
        payload: dict[str, Any],
        conn: Connection | None = None,
    ) -> None:
        """Hand one event of the run to every sink (see ``warden.events`` for the kinds),
        its PII tokenized: the stages decided on the raw values; nothing after sees them."""
        if self.pii is not None:
            payload = self.pii.redact(tenant, payload)
        for sink in self.sinks:
            sink.emit(run_id, tenant, kind, payload, conn)


def _tool_context(tool: ToolDef) -> dict[str, Any]:
    """The ``tool`` value rules see."""
    return {
        "name": tool.name,
        "effect": tool.effect.value,
        "scope": tool.scope,
        "idempotent": tool.idempotent,
        "untrusted_output": tool.untrusted_output,
        "kind": tool.kind,
    }
