"""The SDK's remote mode: the same runs, calls and typed results, over the HTTP API.

    gateway = Gateway.connect("http://warden:8000", api_key="wdn_...", workflow="refund_triage")
    async with gateway.run(agent="refund-bot", task="ticket 42") as run:
        result = await run.call("issue_refund", {...}, wait=30)

Waiting for an approval long-polls the server (``/v1/approvals/{id}/wait``), it does not
spin.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from warden.errors import NotFoundError, UsageError, WardenError
from warden.events import checked_rationale
from warden.results import Denied, FailureKind, Pending, Result, from_wire


class RemoteError(WardenError):
    """The server answered with a problem (4xx/5xx) or could not be reached."""

    def __init__(self, status: int, type: str, detail: str) -> None:
        self.status = status
        self.type = type
        self.detail = detail
        super().__init__(f"{status} {type}: {detail}")


def _result(data: dict[str, Any]) -> Result:
    try:
        return from_wire(data)
    except (KeyError, ValueError, TypeError) as exc:
        raise RemoteError(200, "unknown-status", f"not an action result: {exc}") from None


_PROPAGATOR = TraceContextTextMapPropagator()


def _traceparent() -> dict[str, str]:
    """W3C trace context headers of the caller's current OpenTelemetry span (none when
    there is no span)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


class RemoteGateway:
    """A client of ``warden serve`` with the in-process Gateway's call API."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str,
        workflow: str | None = None,
        tenant: str | None = None,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 75.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.workflow = workflow
        self.tenant = tenant
        self._client = client or httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s
        )

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        traced = _traceparent()
        if traced:  # the server's spans of this request join the caller's trace
            kw["headers"] = {**kw.get("headers", {}), **traced}
        try:
            response = await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise RemoteError(0, "unreachable", f"{self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"type": "http", "detail": response.text[:300]}
            kind = str(body.get("type", "")).removeprefix("urn:warden:problem:")
            detail = str(body.get("detail") or body.get("title") or "")
            if response.status_code == 404:
                raise NotFoundError(detail)
            raise RemoteError(response.status_code, kind, detail)
        return response.json()

    @asynccontextmanager
    async def run(
        self,
        *,
        agent: str,
        task: str,
        workflow: str | None = None,
        tenant: str | None = None,
        task_type: str | None = None,
        end_user: str | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> AsyncIterator[RemoteRun]:
        name = workflow or self.workflow
        if not name:
            raise UsageError(
                "name the workflow: Gateway.connect(..., workflow=...) or run(workflow=...)"
            )
        body: dict[str, Any] = {"workflow": name, "agent": agent, "task": task}
        for key, value in (
            ("tenant", tenant or self.tenant),
            ("task_type", task_type),
            ("end_user", end_user),
        ):
            if value is not None:
                body[key] = value
        if versions:
            body["versions"] = dict(versions)
        opened = await self.request("POST", "/v1/runs", json=body)
        run = RemoteRun(self, opened["run_id"])
        try:
            yield run
        except BaseException:
            await run.finish("abandoned")
            raise
        else:
            await run.finish("completed")

    async def wait_for(self, approval_id: str, timeout_s: float) -> dict[str, Any]:
        """Long-poll until the approval leaves ``pending`` or ``timeout_s`` passes."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        record: dict[str, Any] = await self.request("GET", f"/v1/approvals/{approval_id}")
        while record["state"] == "pending":
            left = until - loop.time()
            if left <= 0:
                break
            record = await self.request(
                "GET", f"/v1/approvals/{approval_id}/wait", params={"timeout_s": min(left, 60.0)}
            )
        return record

    async def execute_approved(self, approval_id: str, *, wait: float = 0.0) -> Result:
        data = await self.request(
            "POST", f"/v1/approvals/{approval_id}/execute", params={"wait_s": min(wait, 60)}
        )
        return _result(data)

    async def approve(
        self, approval_id: str, *, rationale: str, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"decision": "approve", "rationale": rationale}
        if args is not None:
            body["args"] = args
        decided: dict[str, Any] = await self.request(
            "POST", f"/v1/approvals/{approval_id}/decision", json=body
        )
        return decided

    async def reject(self, approval_id: str, *, rationale: str) -> dict[str, Any]:
        decided: dict[str, Any] = await self.request(
            "POST",
            f"/v1/approvals/{approval_id}/decision",
            json={"decision": "reject", "rationale": rationale},
        )
        return decided

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> RemoteGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class RemoteRun:
    def __init__(self, gateway: RemoteGateway, run_id: str) -> None:
        self._gateway = gateway
        self.run_id = run_id
        self.closed = False

    async def call(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
        confidence: float | None = None,
        rationale: str | None = None,
    ) -> Result:
        """The governed call. ``wait``: seconds to wait for an approval, then ``Pending``;
        ``confidence``: how sure the agent is the call is right (0 to 1), recorded;
        ``rationale``: why it proposes the call, in its own words (at most 2,000
        characters), recorded and shown to the approver."""
        if self.closed:
            raise UsageError(f"run {self.run_id} is finished")
        stated = checked_rationale(rationale)
        loop = asyncio.get_running_loop()
        until = loop.time() + (wait or 0.0)
        body: dict[str, Any] = {"tool": tool, "args": args or {}}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if confidence is not None:
            body["confidence"] = confidence
        if stated is not None:
            body["rationale"] = stated
        result = _result(
            await self._gateway.request("POST", f"/v1/runs/{self.run_id}/actions", json=body)
        )
        if not isinstance(result, Pending) or not wait:
            return result
        record = await self._gateway.wait_for(result.approval_id, until - loop.time())
        state = record["state"]
        if state in ("approved", "executing", "executed"):
            return await self._gateway.execute_approved(result.approval_id, wait=5.0)
        if state == "rejected":
            return Denied(
                FailureKind.APPROVAL_REJECTED,
                (record.get("rationale") or "rejected",),
                result.action_id,
            )
        if state == "expired":
            return Denied(
                FailureKind.APPROVAL_TIMEOUT,
                (record.get("rationale") or "expired",),
                result.action_id,
            )
        return result

    async def finish(self, outcome: str = "completed") -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._gateway.request(
                "POST", f"/v1/runs/{self.run_id}/finish", json={"outcome": outcome}
            )
        except RemoteError as exc:
            if exc.type != "run-finished":
                raise
