"""A fallback chain: ordered (upstream, model) targets, each tried when the ones before it
are rate-limited, failing, too slow or behind an open circuit.

Only failures that say "not now, not here" move the call on (``UpstreamError.falls_back``):
a request the upstream refused as invalid (4xx) is refused by the next one too, so it is
raised at once. The reply's ``route`` names the target that answered and, in order, why
each earlier one was skipped; an error carries the same list in ``skipped``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from warden.errors import UsageError
from warden.upstream._client import ChatStream, Upstream
from warden.upstream._errors import UpstreamError, UpstreamsExhausted
from warden.upstream._types import ChatReply, ChatRequest, Skip

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Target:
    """One model on one upstream: where a fallback chain may send a call."""

    upstream: Upstream
    model: str

    def __str__(self) -> str:
        return f"{self.upstream.name}/{self.model}"


def _skip(target: Target, exc: UpstreamError) -> Skip:
    return Skip(target.upstream.name, target.model, exc.reason, str(exc), exc.status)


class FallbackChain:
    """Try ``targets`` in order until one answers."""

    def __init__(self, targets: Sequence[Target]) -> None:
        if not targets:
            raise UsageError("a fallback chain needs at least one target")
        self.targets = tuple(targets)

    def _exhausted(self, skips: list[Skip]) -> UpstreamsExhausted:
        tried = "; ".join(f"{s.upstream}/{s.model}: {s.reason}" for s in skips)
        return UpstreamsExhausted(f"every target failed ({tried})", skips=tuple(skips))

    async def _first(
        self, start: Callable[[Target], Awaitable[T]]
    ) -> tuple[T, tuple[Skip, ...]]:
        """``start(target)`` on each target in turn until one answers; what it answered and
        the targets skipped before it, with why."""
        skips: list[Skip] = []
        for target in self.targets:
            try:
                return await start(target), tuple(skips)
            except UpstreamError as exc:
                exc.skipped = tuple(skips)
                if not exc.falls_back:
                    raise
                skips.append(_skip(target, exc))
        raise self._exhausted(skips)

    async def chat(self, request: ChatRequest) -> ChatReply:
        reply, skips = await self._first(lambda t: t.upstream.chat(request, model=t.model))
        return dataclasses.replace(reply, route=dataclasses.replace(reply.route, skipped=skips))

    async def open_stream(self, request: ChatRequest) -> ChatStream:
        """Open a stream on the first target that starts one. Once a stream has begun it
        stays on its target: a break after that is the caller's to handle."""
        stream, skips = await self._first(
            lambda t: t.upstream.open_stream(request, model=t.model)
        )
        stream.route = dataclasses.replace(stream.route, skipped=skips)
        return stream

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatStream]:
        opened = await self.open_stream(request)
        try:
            yield opened
        finally:
            await opened.aclose()
