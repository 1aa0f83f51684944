"""Running a tool: timeout, retries with backoff and jitter where safe, circuit breaker.

The retry loop is hand-written rather than tenacity's: building a tenacity controller per
call cost ~20 µs here, more than the rest of a governed read call, and the loop is ten
lines.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from warden.errors import ToolError
from warden.results import FailureKind
from warden.tools import ToolDef


@dataclass(slots=True)
class ExecOutcome:
    ok: bool
    value: Any = None
    kind: FailureKind | None = None
    detail: str = ""
    attempts: int = 0
    #: False only when we know the tool did nothing (it raised before any effect).
    effect_possible: bool = False


class CircuitBreaker:
    """Per tool, in process: opens after N consecutive failures, half-opens after a pause."""

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


async def execute(
    tool: ToolDef, kwargs: dict[str, Any], breaker: CircuitBreaker, retry_budget: int
) -> ExecOutcome:
    """Run ``tool`` with retries where safe; ``retry_budget`` caps retries left in the run."""
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
        except TimeoutError:
            effect_possible = True
            kind, detail = FailureKind.TIMEOUT, f"no answer within {tool.timeout_s:g}s"
            retryable = tool.idempotent
        except ToolError as exc:
            kind, detail, retryable = (
                FailureKind.TOOL_ERROR,
                str(exc),
                exc.retryable or tool.idempotent,
            )
        except Exception as exc:
            kind, detail = FailureKind.TOOL_ERROR, f"{type(exc).__name__}: {exc}"
            retryable = tool.idempotent
        else:
            breaker.record(True)
            return ExecOutcome(True, value, attempts=attempts, effect_possible=True)
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
