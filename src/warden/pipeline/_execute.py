"""Running a tool: timeout, retries with backoff and jitter where safe, circuit breaker.

Actions and fact lookups both go through ``Executor.run``: a fact's tool is switched off by
the same kill switch, has the same timeout and breaker, and gets its credential minted the
same way as when the agent calls it.

The retry loop is hand-written rather than tenacity's: building a tenacity controller per
call cost ~20 µs here, more than the rest of a governed read call, and the loop is ten
lines.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from warden.errors import ToolError
from warden.pipeline._switches import SwitchBoard
from warden.results import FailureKind
from warden.secrets import Redactor, SecretError, SecretResolver
from warden.tools import ToolDef


@dataclass(slots=True)
class ExecOutcome:
    ok: bool
    value: Any = None
    kind: FailureKind | None = None
    detail: str = ""
    attempts: int = 0
    #: False only when the tool declared that nothing happened (``ToolError(effect=False)``)
    #: or it was never started (switch, open circuit, no credential).
    effect_possible: bool = False
    #: the minted credential's redactor, when the tool got one
    redactor: Redactor | None = None


class CircuitBreaker:
    """Per tenant and tool, in process: opens after N consecutive failures of the tool
    itself, half-opens after a pause."""

    def __init__(self, threshold: int, reset_after_s: float) -> None:
        self.threshold = threshold
        self.reset_after_s = reset_after_s
        self.failures = 0
        self.opened_at: float | None = None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at >= self.reset_after_s:
            return True  # half-open: let one call probe
        return False

    def record(self, ok: bool) -> None:
        if ok:
            self.failures = 0
            self.opened_at = None
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


async def invoke(tool: ToolDef, kwargs: dict[str, Any]) -> Any:
    """One attempt under the tool's timeout. Sync tools run in a worker thread so the
    timeout is real and the event loop keeps serving other runs."""
    assert tool.fn is not None
    if tool.is_async:
        async with asyncio.timeout(tool.timeout_s):
            return await tool.fn(**kwargs)
    return await asyncio.wait_for(asyncio.to_thread(tool.fn, **kwargs), tool.timeout_s)


class Executor:
    """Runs tools for the pipeline's stages: switches, credential, breaker, retries."""

    def __init__(self, switches: SwitchBoard, secrets: SecretResolver, workflow: str) -> None:
        self.switches = switches
        self.secrets = secrets
        self.workflow = workflow
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()

    def breaker(self, tenant: str, tool: ToolDef) -> CircuitBreaker:
        key = (tenant, tool.name)
        found = self._breakers.get(key)
        if found is None:
            with self._lock:
                found = self._breakers.setdefault(
                    key,
                    CircuitBreaker(
                        tool.circuit.failure_threshold, tool.circuit.reset_after.total_seconds()
                    ),
                )
        return found

    async def run(
        self,
        tenant: str,
        tool: ToolDef,
        kwargs: dict[str, Any],
        *,
        retry_budget: int,
        check_switches: bool = True,
    ) -> ExecOutcome:
        """Run ``tool`` for ``tenant`` with retries where safe; ``retry_budget`` caps the
        retries left in the run. ``check_switches=False`` only where the caller has just
        checked them (the pipeline's switch stage)."""
        if check_switches:
            switch = self.switches.blocking(tenant, self.workflow, tool.name)
            if switch is not None:
                return ExecOutcome(False, kind=FailureKind.KILLED, detail=switch.describe())
        redactor: Redactor | None = None
        if tool.credential_param and tool.credential:
            # Minted here, for this call only: the agent never sees it, the ledger never
            # records it, and anything the tool echoes back is scrubbed.
            try:
                secret = self.secrets.mint(
                    tool.credential, ttl=timedelta(seconds=max(60.0, tool.timeout_s * 2))
                )
            except SecretError as exc:
                return ExecOutcome(False, kind=FailureKind.CREDENTIAL_ERROR, detail=str(exc))
            redactor = Redactor()
            redactor.add(secret)
            kwargs = {**kwargs, tool.credential_param: secret}
        outcome = await _attempts(tool, kwargs, self.breaker(tenant, tool), retry_budget)
        outcome.redactor = redactor
        if redactor is not None and not outcome.ok:
            outcome.detail = redactor.redact_text(outcome.detail)
        return outcome


def _classify(
    exc: BaseException, tool: ToolDef, timeout_s: float
) -> tuple[FailureKind, str, bool, bool, bool]:
    """(kind, detail, retryable, effect possible, counts against the breaker)."""
    if isinstance(exc, TimeoutError):
        return FailureKind.TIMEOUT, f"no answer within {timeout_s:g}s", tool.idempotent, True, True
    if isinstance(exc, ToolError):
        return (
            FailureKind.TOOL_ERROR,
            str(exc),
            exc.retryable or tool.idempotent,
            exc.effect is not False,
            exc.fault == "tool",
        )
    # An unexpected exception (a reset connection, a bug in the tool) may come after the
    # effect: the write is settled as unknown, never freed for a second charge.
    return FailureKind.TOOL_ERROR, f"{type(exc).__name__}: {exc}", tool.idempotent, True, True


async def _attempts(
    tool: ToolDef, kwargs: dict[str, Any], breaker: CircuitBreaker, retry_budget: int
) -> ExecOutcome:
    if not breaker.allow():
        return ExecOutcome(
            False,
            kind=FailureKind.CIRCUIT_OPEN,
            detail=f"circuit open after {breaker.failures} consecutive failures of {tool.name!r}",
        )
    attempts = 0
    max_attempts = tool.retry.max_attempts
    effect_possible = False
    while True:
        attempts += 1
        try:
            value = await invoke(tool, kwargs)
        except Exception as exc:
            kind, detail, retryable, effect, counts = _classify(exc, tool, tool.timeout_s)
            effect_possible = effect_possible or effect
        else:
            breaker.record(True)
            return ExecOutcome(True, value, attempts=attempts, effect_possible=True)
        if counts:
            breaker.record(False)
        if not retryable or attempts >= max_attempts or attempts > retry_budget:
            if retryable and attempts < max_attempts:
                kind = FailureKind.RETRIES_EXHAUSTED
                detail += " (the run's retry cap is reached)"
            return ExecOutcome(
                False, kind=kind, detail=detail, attempts=attempts, effect_possible=effect_possible
            )
        if not breaker.allow():
            return ExecOutcome(
                False,
                kind=FailureKind.CIRCUIT_OPEN,
                detail=detail,
                attempts=attempts,
                effect_possible=effect_possible,
            )
        cap = min(
            tool.retry.max_backoff.total_seconds(),
            tool.retry.backoff.total_seconds() * 2 ** (attempts - 1),
        )
        # "Equal jitter": at least half the backoff, so retries spread without collapsing to 0.
        await asyncio.sleep(cap / 2 + random.uniform(0, cap / 2))
