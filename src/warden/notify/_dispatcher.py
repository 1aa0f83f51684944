"""Delivering the outbox to webhook receivers, from any number of replicas.

Each pass selects due rows and claims them one at a time with a conditional UPDATE on the
lease, so two replicas never deliver the same row at the same time; a replica that dies
mid-delivery leaves a lease that expires, and another replica retries the row. Delivery is
therefore at least once: receivers deduplicate on ``X-Warden-Delivery`` (the outbox id).

Every attempt is recorded in ``webhook_deliveries``. A row is ``delivered`` once every target
that wants its kind answered 2xx (targets that already did are not sent it again); otherwise
it is retried with exponential backoff and jitter until ``max_attempts``, then ``failed``.

Database work runs in worker threads (``asyncio.to_thread``) so that a slow store does not
stall the event loop the gateway serves requests on; no transaction is held across an await.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import httpx
from sqlalchemy import insert, or_, select, update

from warden.errors import UsageError
from warden.ledger import canonical_json
from warden.notify._config import WebhookTarget
from warden.notify._signing import sign
from warden.secrets import Redactor, SecretError, SecretResolver
from warden.store import Store
from warden.store._tables import outbox, webhook_deliveries

logger = logging.getLogger("warden.notify")

_ERROR_MAX = 2000  # characters of last_error / error kept
_BODY_EXCERPT = 200  # bytes of a failed response kept as evidence


def _utc_now() -> datetime:
    return datetime.now(UTC)


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    "Equal jitter": half of the exponential step is fixed and half random, so retries of many
    rows that failed together (a receiver outage) spread out instead of arriving in waves,
    while each still waits at least half its step.
    """
    step = min(max_s, base_s * 2.0 ** min(attempt - 1, 62))
    return step / 2 + rng.uniform(0, step / 2)


def display_url(url: str) -> str:
    """``url`` with any password in it masked: this is what is stored and logged."""
    parsed = httpx.URL(url)
    if parsed.password:
        return str(parsed.copy_with(username=parsed.username, password="***"))
    return url


@dataclass(frozen=True)
class _Claimed:
    id: int
    tenant: str
    kind: str
    payload: Any
    attempts: int
    created_at: datetime
    lease_until: datetime  # also the lease's token: see _claim
    succeeded: frozenset[str]  # display URLs that already answered 2xx


@dataclass(frozen=True)
class _Attempt:
    url: str  # display form
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Dispatcher:
    """Delivers pending outbox rows to ``targets``; run one per replica (or several)."""

    def __init__(
        self,
        store: Store,
        targets: Sequence[WebhookTarget],
        resolver: SecretResolver,
        *,
        client: httpx.AsyncClient | None = None,
        max_attempts: int = 8,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        lease_s: float = 30.0,
        clock: Callable[[], datetime] = _utc_now,
        batch_size: int = 100,
        concurrency: int = 8,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise UsageError("max_attempts must be at least 1")
        if base_delay_s <= 0 or max_delay_s < base_delay_s:
            raise UsageError("need 0 < base_delay_s <= max_delay_s")
        if batch_size < 1 or concurrency < 1:
            raise UsageError("batch_size and concurrency must be at least 1")
        longest = max((t.timeout_s for t in targets), default=0.0)
        if lease_s <= longest:
            # A lease that can run out during a send lets another replica send the row too.
            raise UsageError(
                f"lease_s ({lease_s:g}) must exceed the longest target timeout ({longest:g}s)"
            )
        urls = [display_url(t.url) for t in targets]
        duplicates = sorted({u for u in urls if urls.count(u) > 1})
        if duplicates:
            raise UsageError(f"webhook targets must have distinct URLs: {', '.join(duplicates)}")
        self.store = store
        self.targets = tuple(targets)
        self.resolver = resolver
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.lease_s = lease_s
        self.batch_size = batch_size
        self.concurrency = concurrency
        self._clock = clock
        self._rng = rng or random.Random()
        self._client = client
        self._owns_client = client is None
        # Every signing secret resolved so far: scrubbed from errors before storing/logging.
        self.redactor = Redactor()
        self._last_claimable = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if the dispatcher created it (a passed-in one is the caller's)."""
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False, headers={"User-Agent": "warden-webhooks"}
            )
        return self._client

    # -- the loop -------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event, interval_s: float = 0.5) -> None:
        """Run passes until ``stop`` is set; an exception in a pass is logged, never fatal."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                logger.exception("webhook dispatch pass failed; retrying in %.1fs", interval_s)
                self._last_claimable = 0
            if self._last_claimable >= self.batch_size:
                await asyncio.sleep(0)  # a full batch: there is probably more, go on
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """One pass over the due rows; returns how many were finished (delivered or failed).

        Rows another replica claimed first are skipped; rows that failed but have attempts
        left are rescheduled and not counted. Errors of individual rows are logged; the first
        is re-raised once every row of the pass has been handled.
        """
        now = self._clock()
        ids = await asyncio.to_thread(self._due_ids, now)
        self._last_claimable = len(ids)
        if not ids:
            return 0
        limit = asyncio.Semaphore(self.concurrency)

        async def one(row_id: int) -> bool:
            async with limit:
                return await self._process(row_id)

        results = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors[1:]:
            logger.error("webhook dispatch of a row failed", exc_info=error)
        if errors:
            raise errors[0]
        return sum(1 for r in results if r is True)

    async def _process(self, row_id: int) -> bool:
        claimed = await asyncio.to_thread(self._claim, row_id, self._clock())
        if claimed is None:
            return False  # another replica has it, or it changed since the select
        wanted = [t for t in self.targets if t.wants(claimed.kind)]
        todo = [t for t in wanted if display_url(t.url) not in claimed.succeeded]
        attempts: list[_Attempt] = []
        if todo:
            body = canonical_json(
                {
                    "id": claimed.id,
                    "kind": claimed.kind,
                    "tenant": claimed.tenant,
                    "created_at": claimed.created_at,
                    "payload": claimed.payload,
                }
            ).encode("utf-8")
            attempts = list(await asyncio.gather(*(self._send(t, claimed, body) for t in todo)))
        return await asyncio.to_thread(self._record, claimed, attempts, self._clock())

    # -- HTTP -----------------------------------------------------------------------------

    async def _send(self, target: WebhookTarget, claimed: _Claimed, body: bytes) -> _Attempt:
        url = display_url(target.url)
        try:
            secret = self.resolver.mint(target.secret)
        except SecretError as exc:
            # Nothing is sent unsigned; the message names the reference, not a value.
            return _Attempt(url, None, f"signing secret: {exc}", 0.0)
        self.redactor.add(secret)
        headers = {
            "Content-Type": "application/json",
            "X-Warden-Event": claimed.kind,
            "X-Warden-Delivery": str(claimed.id),
            "X-Warden-Signature": sign(secret.value, body, int(self._clock().timestamp())),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            # httpx's timeout bounds each phase (connect, each read); this bounds the whole.
            async with asyncio.timeout(target.timeout_s):
                async with self._http().stream(
                    "POST", target.url, content=body, headers=headers, timeout=target.timeout_s
                ) as response:
                    status = response.status_code
                    if not 200 <= status < 300:
                        error = f"HTTP {status}"
                        excerpt = await _excerpt(response)
                        if excerpt:
                            error += f": {excerpt}"
                        retry_after = _retry_after(response.headers.get("retry-after"))
        except TimeoutError:
            status, error = None, f"timed out after {target.timeout_s:g}s"
        except Exception as exc:  # any failure of one receiver is that attempt's outcome
            detail = str(exc)
            status, error = (
                None,
                f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__,
            )
        duration_ms = (time.perf_counter() - started) * 1000
        if error is not None:
            error = self.redactor.redact_text(error)[:_ERROR_MAX]
        return _Attempt(url, status, error, duration_ms, retry_after)

    # -- store ----------------------------------------------------------------------------

    def _due_ids(self, now: datetime) -> list[int]:
        with self.store.read() as conn:
            rows = conn.execute(
                select(outbox.c.id)
                .where(
                    outbox.c.state == "pending",
                    outbox.c.next_attempt_at <= now,
                    or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now),
                )
                .order_by(outbox.c.next_attempt_at, outbox.c.id)
                .limit(self.batch_size)
            )
            return [int(r) for r in rows.scalars()]

    def _claim(self, row_id: int, now: datetime) -> _Claimed | None:
        # lease_until doubles as the lease token: the random sub-millisecond part makes it
        # unique per claim, so a replica whose lease ran out cannot finish a row that
        # another replica has claimed since (the final UPDATE matches on it).
        until = now + timedelta(seconds=self.lease_s, microseconds=self._rng.randrange(1, 1000))
        # durable=False: losing a lease in a crash only delays the row by one pass.
        with self.store.write(durable=False) as conn:
            claimed = conn.execute(
                update(outbox)
                .where(
                    outbox.c.id == row_id,
                    outbox.c.state == "pending",
                    outbox.c.next_attempt_at <= now,
                    or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now),
                )
                .values(lease_until=until)
            )
            if claimed.rowcount != 1:
                return None
            row = conn.execute(select(outbox).where(outbox.c.id == row_id)).mappings().one()
            succeeded: set[str] = set()
            if row["attempts"]:
                succeeded = set(
                    conn.execute(
                        select(webhook_deliveries.c.url).where(
                            webhook_deliveries.c.outbox_id == row_id,
                            webhook_deliveries.c.status_code >= 200,
                            webhook_deliveries.c.status_code < 300,
                        )
                    ).scalars()
                )
        return _Claimed(
            id=int(row["id"]),
            tenant=row["tenant"],
            kind=row["kind"],
            payload=json.loads(row["payload"]),
            attempts=int(row["attempts"]),
            created_at=row["created_at"],
            lease_until=until,
            succeeded=frozenset(succeeded),
        )

    def _record(self, claimed: _Claimed, attempts: list[_Attempt], now: datetime) -> bool:
        """Store the attempts and the row's next state; True if the row is now finished."""
        number = claimed.attempts + 1
        failures = [a for a in attempts if not a.ok]
        values: dict[str, Any] = {"attempts": number, "lease_until": None}
        if not failures:
            values.update(state="delivered", delivered_at=now, last_error=None)
        else:
            last_error = "; ".join(f"{a.url}: {a.error}" for a in failures)[:_ERROR_MAX]
            values["last_error"] = last_error
            if number >= self.max_attempts:
                values["state"] = "failed"
            else:
                delay = backoff_delay(number, self.base_delay_s, self.max_delay_s, self._rng)
                hinted = [a.retry_after_s for a in failures if a.retry_after_s is not None]
                if hinted:  # a receiver's Retry-After is honoured, within max_delay_s
                    delay = min(max(delay, *hinted), self.max_delay_s)
                values["next_attempt_at"] = now + timedelta(seconds=delay)
        with self.store.write() as conn:
            if attempts:
                conn.execute(
                    insert(webhook_deliveries),
                    [
                        {
                            "outbox_id": claimed.id,
                            "url": a.url,
                            "attempt": number,
                            "status_code": a.status_code,
                            "error": a.error,
                            "duration_ms": a.duration_ms,
                            "at": now,
                        }
                        for a in attempts
                    ],
                )
            result = conn.execute(
                update(outbox)
                .where(
                    outbox.c.id == claimed.id,
                    outbox.c.state == "pending",
                    outbox.c.lease_until == claimed.lease_until,
                )
                .values(**values)
            )
            kept_lease = result.rowcount == 1
        self._log(claimed, number, failures, values.get("state"), kept_lease)
        return kept_lease and values.get("state") in ("delivered", "failed")

    def _log(
        self,
        claimed: _Claimed,
        number: int,
        failures: list[_Attempt],
        state: str | None,
        kept_lease: bool,
    ) -> None:
        if not kept_lease:
            logger.warning(
                "outbox %d (%s): lease expired during delivery; another replica owns it now",
                claimed.id,
                claimed.kind,
            )
            return
        for a in failures:
            logger.warning(
                "outbox %d (%s) to %s: attempt %d/%d failed: %s",
                claimed.id,
                claimed.kind,
                a.url,
                number,
                self.max_attempts,
                a.error,
            )
        if state == "failed":
            logger.error(
                "outbox %d (%s): giving up after %d attempts", claimed.id, claimed.kind, number
            )
        elif state == "delivered":
            logger.debug("outbox %d (%s): delivered", claimed.id, claimed.kind)


async def _excerpt(response: httpx.Response) -> str:
    """The start of a failed response's body, as evidence; the rest is not read."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= _BODY_EXCERPT:
            break
    return " ".join(data[:_BODY_EXCERPT].decode("utf-8", "replace").split())


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # the HTTP-date form is rare for webhooks; the backoff applies
    return seconds if seconds >= 0 else None
