"""What the stages share: the spec, the store-backed components, the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from warden.approvals import ApprovalQueue
from warden.ledger import LedgerWriter
from warden.pipeline._execute import Executor
from warden.pipeline._locks import ResourceLocks
from warden.pipeline._switches import SwitchBoard
from warden.policy import Policy, Windows
from warden.secrets import SecretResolver
from warden.spec import LoadedSpec
from warden.store import Store
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
    executor: Executor = field(init=False)
    locks: ResourceLocks = field(init=False)

    def __post_init__(self) -> None:
        for tool in self.registry:
            self.tool_contexts[tool.name] = _tool_context(tool)
        self.executor = Executor(self.switches, self.secrets, self.workflow)
        self.locks = ResourceLocks(self.store)

    @property
    def workflow(self) -> str:
        return self.loaded.spec.name

    def record(self, run_id: str, tenant: str, type: str, payload: dict[str, Any]) -> None:
        self.ledger.append(run_id, tenant, run_id, type, payload)


def _tool_context(tool: ToolDef) -> dict[str, Any]:
    """The ``tool`` value rules see."""
    return {
        "name": tool.name,
        "effect": tool.effect.value,
        "scope": tool.scope,
        "idempotent": tool.idempotent,
        "untrusted_output": tool.untrusted_output,
    }
