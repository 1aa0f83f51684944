"""Test doubles for users' own tests: fake tools that count their side effects, and a
scripted agent that replays a fixed list of calls."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from warden.errors import ToolError
from warden.gateway import Run, SyncRun
from warden.results import Result
from warden.tools import make_tool
from warden.tools._registry import _ATTR


class FakeTool:
    """A tool whose behaviour a test scripts: what it returns, how often it fails, how slow.

    ``calls`` lists the arguments of every invocation — its side effects — so a test can
    assert that something ran exactly once, or never.
    """

    def __init__(
        self,
        name: str,
        *,
        params: dict[str, Any] | None = None,
        returns: Any = None,
        fail_times: int = 0,
        error: Exception | None = None,
        delay: float = 0.0,
        effect: str = "read",
        idempotent: bool | None = None,
        untrusted_output: bool = False,
        scope: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.returns = returns
        self.fail_times = fail_times
        # A scripted failure is the tool's own (its backend is down): it counts towards the
        # circuit breaker, and a write's outcome is unknown after it.
        self.error = error or ToolError(f"{name} failed (scripted)", fault="tool")
        self.delay = delay
        self.calls: list[dict[str, Any]] = []
        params = params or {}

        async def impl(**kwargs: Any) -> Any:
            self.calls.append(kwargs)
            if self.delay:
                await asyncio.sleep(self.delay)
            if len(self.calls) <= self.fail_times:
                raise self.error
            return self.returns(**kwargs) if callable(self.returns) else self.returns

        impl.__name__ = name
        impl.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in params]
        )
        impl.__annotations__ = dict(params)
        setattr(
            impl,
            _ATTR,
            make_tool(
                impl,
                name=name,
                effect=effect,
                idempotent=idempotent,
                untrusted_output=untrusted_output,
                scope=scope,
                timeout=timeout,
            ),
        )
        self.fn: Callable[..., Any] = impl

    @property
    def call_count(self) -> int:
        return len(self.calls)


@dataclass(frozen=True)
class Step:
    tool: str
    args: dict[str, Any]
    idempotency_key: str | None = None


class ScriptedAgent:
    """Replays a fixed list of tool calls through a run and keeps every result."""

    def __init__(self, steps: Iterable[Step | tuple[str, dict[str, Any]]]) -> None:
        self.steps = [s if isinstance(s, Step) else Step(s[0], s[1]) for s in steps]
        self.results: list[Result] = []

    async def run(self, run: Run) -> list[Result]:
        for step in self.steps:
            self.results.append(
                await run.call(step.tool, step.args, idempotency_key=step.idempotency_key)
            )
        return self.results

    def run_sync(self, run: SyncRun) -> list[Result]:
        for step in self.steps:
            self.results.append(
                run.call(step.tool, step.args, idempotency_key=step.idempotency_key)
            )
        return self.results
