"""The SDK without ``async``: ``gateway.sync()``, on a private event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from warden.approvals import ApprovalRecord
from warden.errors import UsageError
from warden.results import Result

if TYPE_CHECKING:
    from warden.gateway import Gateway, Run

T = TypeVar("T")


def _run_sync(runner: asyncio.Runner, coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return runner.run(coro)
    coro.close()
    raise UsageError(
        "the sync facade was called inside a running event loop; use the async API "
        "(await gateway.run(...) / await run.call(...)) there"
    )


class SyncGateway:
    """The same API without ``async``, on a private event loop."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._runner = asyncio.Runner()

    @contextmanager
    def run(
        self,
        *,
        tenant: str,
        agent: str,
        task: str,
        task_type: str | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> Iterator[SyncRun]:
        run = self.gateway.open_run(
            tenant=tenant, agent=agent, task=task, task_type=task_type, versions=versions
        )
        try:
            yield SyncRun(run, self._runner)
        except BaseException:
            run.finish("error")
            raise
        else:
            run.finish("completed")

    def execute_approved(
        self, approval_id: str, *, wait: float = 0.0, actor: str | None = None
    ) -> Result:
        return _run_sync(
            self._runner, self.gateway.execute_approved(approval_id, wait=wait, actor=actor)
        )

    def approve(
        self,
        approval_id: str,
        *,
        approver: str,
        rationale: str,
        args: dict[str, Any] | None = None,
        roles: Iterable[str] = (),
        on_behalf_of: str | None = None,
    ) -> ApprovalRecord:
        return _run_sync(
            self._runner,
            self.gateway.approve(
                approval_id,
                approver=approver,
                rationale=rationale,
                args=args,
                roles=roles,
                on_behalf_of=on_behalf_of,
            ),
        )

    def reject(
        self,
        approval_id: str,
        *,
        approver: str,
        rationale: str,
        roles: Iterable[str] = (),
        on_behalf_of: str | None = None,
    ) -> ApprovalRecord:
        return _run_sync(
            self._runner,
            self.gateway.reject(
                approval_id,
                approver=approver,
                rationale=rationale,
                roles=roles,
                on_behalf_of=on_behalf_of,
            ),
        )

    def close(self) -> None:
        if self.gateway.svc.models is not None:
            _run_sync(self._runner, self.gateway.svc.models.aclose())
        self._runner.close()
        self.gateway.close()

    def __enter__(self) -> SyncGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncRun:
    def __init__(self, run: Run, runner: asyncio.Runner) -> None:
        self.run = run
        self._runner = runner

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def call(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
        actor: str | None = None,
        confidence: float | None = None,
        rationale: str | None = None,
    ) -> Result:
        return _run_sync(
            self._runner,
            self.run.call(
                tool,
                args,
                idempotency_key=idempotency_key,
                wait=wait,
                actor=actor,
                confidence=confidence,
                rationale=rationale,
            ),
        )

    def finish(self, outcome: str = "completed") -> None:
        self.run.finish(outcome)


__all__ = ["SyncGateway", "SyncRun"]
