"""The declared models of one gateway: their upstreams, prices and budgets.

A model ``m`` of the spec is the tool ``model:m`` (``spec._models``): its calls pass the
same stages as a tool's (record, switches, caps, identity, schema, policy, approval), then
the model stages (``pipeline.stages._model``): budget, then the upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

import fastjsonschema
import httpx
from sqlalchemy import delete, insert, select

from warden.economics import (
    Budgets,
    Limit,
    ModelPricing,
    Reservation,
    data_version,
    pricing_for,
    targets_for,
)
from warden.economics import Target as BudgetTarget
from warden.errors import CelError, SpecError
from warden.ledger import canonical_json
from warden.pipeline._call import Call, RunState
from warden.policy.cel import CompiledExpression, compile_expression
from warden.secrets import SecretResolver
from warden.spec import MODEL_TOOL_PREFIX, LoadedSpec, ModelSpec
from warden.spec._loader import ROUTE_ROOTS
from warden.store import Store
from warden.store._tables import model_cache
from warden.telemetry._redact import PiiRedactor, stored_identity
from warden.telemetry._vault import Vault, VaultError
from warden.upstream import (
    AnthropicUpstream,
    ChatReply,
    ChatRequest,
    ChatStream,
    FallbackChain,
    OpenAIUpstream,
    Route,
    StreamEvent,
    Target,
    Upstream,
    UpstreamError,
    Usage,
    Wire,
    new_client,
)

#: Tokens of per-message framing added to the input bound (chat templates add a few
#: tokens per message; 8 is above what OpenAI's and Anthropic's templates add).
_PER_MESSAGE = 8
_PER_REQUEST = 16


def input_token_bound(request: ChatRequest) -> int:
    """An upper bound on the request's input tokens, without the model's tokenizer.

    Byte-level BPE tokenizers (OpenAI's, Anthropic's, Llama's) never make a token of less
    than one byte, so the UTF-8 size of the messages, system text and tool definitions,
    plus a few tokens of framing per message, bounds the input. It over-counts ~3-4x for
    English text: a reservation is pessimistic on input (released at settle), never short
    (see docs/economics.md, "What is reserved").
    """
    body = request.to_body()
    parts = [body.get("messages"), body.get("system"), body.get("tools")]
    size = len(json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode())
    return size + _PER_MESSAGE * len(request.messages) + _PER_REQUEST


def to_nusd(usd: Decimal) -> int:
    """USD as integer nano-dollars, rounded up (what a run's total is kept in)."""
    return int((usd * 1_000_000_000).to_integral_value(rounding=ROUND_CEILING))


@dataclass(slots=True)
class ModelCall:
    """What the model stages made of one model call (``Call.model``)."""

    #: the declared model the call goes to (another than asked when a budget rerouted it)
    name: str
    spec: ModelSpec
    request: ChatRequest
    reservation: Reservation | None = None
    #: ``max_tokens`` the call was sent with, when a budget paid for fewer than asked
    capped: int | None = None
    rerouted: str | None = None
    #: the route rule that picked the model (``Call.routed``)
    routed: str | None = None
    #: earlier attempts' failures (an invalid structured output, then a stronger model)
    escalated: list[str] = field(default_factory=list)
    reply: ChatReply | None = None
    stream: GovernedStream | None = None
    #: what it cost, once settled (USD; None: unknown and nothing was reserved)
    cost_usd: Decimal | None = None
    usage: Usage | None = None
    settled: bool = False
    #: answered from the cache, and what the reply cost when it was made (saved now)
    cached: bool = False
    cached_cost: Decimal | None = None

    def output_schema(self) -> dict[str, Any] | None:
        """The JSON schema a structured output must meet (OpenAI's ``response_format``
        ``{"type": "json_schema", "json_schema": {"schema": ...}}``), if the call set one."""
        found = self.request.model_extra or {}
        fmt = getattr(self.request, "response_format", None) or found.get("response_format")
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            return None
        schema = (fmt.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None


_VALIDATORS: dict[str, Callable[[Any], Any]] = {}


def output_problem(schema: dict[str, Any], text: str) -> str | None:
    """Why ``text`` is not a JSON value meeting ``schema`` (None: it is)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"the structured output is not JSON ({exc})"
    key = json.dumps(schema, sort_keys=True)
    check = _VALIDATORS.get(key)
    if check is None:
        check = _VALIDATORS[key] = fastjsonschema.compile(schema)
    try:
        check(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        return f"the structured output does not meet its schema: {exc.message}"
    return None


class _StreamView:
    """What a stream said so far, read from the upstream's stream (``inner``)."""

    inner: ChatStream | HeldStream

    @property
    def usage(self) -> Usage | None:
        return self.inner.usage

    @property
    def text(self) -> str:
        return self.inner.text

    def reply(self) -> ChatReply:
        return self.inner.reply()


class HeldStream(_StreamView):
    """A stream read to its end before any of it is passed on (a structured output is
    checked first), then replayed: the same interface as the upstream's ``ChatStream``."""

    def __init__(self, inner: ChatStream, events: list[StreamEvent]) -> None:
        self.inner = inner
        self.events = events
        self.route = inner.route

    @classmethod
    async def read(cls, inner: ChatStream) -> HeldStream:
        events = [event async for event in inner]
        return cls(inner, events)

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._replay()

    async def _replay(self) -> AsyncIterator[StreamEvent]:
        for event in self.events:
            yield event

    async def aclose(self) -> None:
        await self.inner.aclose()


class GovernedStream(_StreamView):
    """A model call's stream, passed on as it comes; when it ends (or is closed, or
    fails) the call is settled once: usage read from the stream, priced, charged to the
    budgets, recorded (``on_end``)."""

    def __init__(
        self,
        inner: ChatStream | HeldStream,
        on_end: Callable[[ChatStream | HeldStream], Awaitable[None]],
    ) -> None:
        self.inner = inner
        self._on_end = on_end
        self._ended = False

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        try:
            async for event in self.inner:
                yield event
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the upstream stream (if still open) and settle the call, once."""
        if self._ended:
            return
        self._ended = True
        try:
            await self.inner.aclose()
        finally:
            await asyncio.shield(self._on_end(self.inner))


class UpstreamConfigError(UpstreamError):
    """A model's upstream cannot be reached as configured (an unset ``env:`` base URL)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, upstream="config", reason="connect_error", retryable=False)


@dataclass(frozen=True, slots=True)
class CachedReply:
    """A reply from the model cache and what it cost when it was first made."""

    reply: ChatReply
    cost_usd: Decimal | None


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A model call that ran (``Run.chat``): the reply, what it used and what it cost.

    ``body`` is the reply in the request's wire shape (what the upstream answered, or its
    conversion); ``usage`` is None when the upstream did not report it, and the call was
    then charged its reservation (``cost_usd``), never 0.
    """

    action_id: str
    #: the declared model that answered (another than asked when a budget rerouted it)
    model: str
    body: dict[str, Any]
    text: str
    usage: Usage | None
    cost_usd: Decimal | None
    #: the upstream and model that answered, attempts, targets skipped
    route: Any
    #: the ``max_tokens`` the call was sent with, when a budget paid for fewer than asked
    capped_max_tokens: int | None = None
    rerouted: str | None = None
    #: answered from the model cache (``cost_usd`` is then 0)
    cached: bool = False

    @classmethod
    def of(cls, action_id: str, model: ModelCall) -> ChatResult:
        reply = model.reply
        assert reply is not None
        return cls(
            action_id,
            model.name,
            reply.body,
            reply.text,
            reply.usage,
            model.cost_usd,
            reply.route,
            model.capped,
            model.rerouted,
            model.cached,
        )


class ChatStreamResult:
    """A streamed model call that is under way (``Run.chat(..., stream=True)``): iterate
    it for the events (in the request's wire shape, as they come); when it ends, ``usage``
    and ``cost_usd`` are known and the call is settled and recorded. Close it
    (``aclose``) if you stop early: it is settled then, with what was read."""

    def __init__(self, action_id: str, model: ModelCall) -> None:
        assert model.stream is not None
        self.action_id = action_id
        self.model = model.name
        self.capped_max_tokens = model.capped
        self.rerouted = model.rerouted
        self._call = model
        self._stream = model.stream

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def text(self) -> str:
        return self._stream.text

    @property
    def usage(self) -> Usage | None:
        return self._call.usage if self._call.settled else self._stream.usage

    @property
    def cost_usd(self) -> Decimal | None:
        return self._call.cost_usd

    @property
    def settled(self) -> bool:
        return self._call.settled


@dataclass
class Models:
    """The declared models of one gateway: an upstream per model (one HTTP connection
    pool per event loop), its prices, and the spec's budgets in the store."""

    loaded: LoadedSpec
    store: Store
    secrets: SecretResolver
    clock: Callable[[], datetime]
    pricing: dict[str, ModelPricing] = field(default_factory=dict)
    limits: tuple[Limit, ...] = ()
    #: seals cached replies with the tenant's key (None: stored as the model gave them)
    vault: Vault | None = None
    #: tokenizes an end user's PII in the budget counters' keys (None: kept as given)
    pii: PiiRedactor | None = None
    budgets: Budgets = field(init=False)
    #: each route's rules, compiled: (condition or None for "always", model, reason)
    routes: dict[str, list[tuple[CompiledExpression | None, str, str | None]]] = field(
        default_factory=dict
    )
    _clients: weakref.WeakKeyDictionary[
        asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, dict[str, Upstream]]
    ] = field(default_factory=weakref.WeakKeyDictionary)

    def __post_init__(self) -> None:
        spec = self.loaded.spec
        issues = []
        for name, model in spec.models.items():
            self.pricing[name] = pricing_for(model.pricing_provider, model.model, model.price)
        for i, budget in enumerate(spec.budgets):
            if budget.on_exhausted == "require_approval":
                issues.append(
                    self.loaded.issue(
                        ("budgets", i, "on_exhausted"),
                        "'require_approval' on an exhausted budget is not supported yet: "
                        "use 'deny' or 'route:<model>'",
                    )
                )
        if issues:
            raise SpecError(issues)
        self.limits = tuple(Limit.from_spec(b) for b in spec.budgets)
        self.budgets = Budgets(self.store, clock=self.clock)
        for route, rules in spec.routes.items():  # checked at load (spec._loader)
            self.routes[route] = [
                (
                    None if r.when is None else compile_expression(r.when, roots=ROUTE_ROOTS),
                    r.model,
                    r.reason,
                )
                for r in rules
            ]

    @property
    def declared(self) -> dict[str, ModelSpec]:
        return self.loaded.spec.models

    @staticmethod
    def name_of(tool: str) -> str:
        return tool.removeprefix(MODEL_TOOL_PREFIX)

    def priced_by(self, name: str) -> str:
        return "spec" if self.declared[name].price is not None else f"genai-prices {data_version()}"

    def targets(self, run: RunState) -> tuple[BudgetTarget, ...]:
        if not self.limits:
            return ()
        return targets_for(
            self.limits,
            tenant=run.tenant,
            workflow=run.workflow,
            agent=run.agent,
            run_id=run.run_id,
            end_user=stored_identity(self.pii, run.tenant, run.end_user),
        )

    def route(self, route: str, call: Call) -> str | None:
        """The model the route picks for ``call`` (its first rule that holds), with
        ``call.routed`` saying which rule and why; None when no rule holds or one cannot be
        evaluated (``call.routed`` then says so: the call is refused, fail closed)."""
        run = call.run
        activation = {
            "run": run.context(),
            "args": call.raw_args if isinstance(call.raw_args, dict) else {},
            "hints": call.hints,
            "tenant": run.tenant,
            "principal": run.principal,
        }
        for i, (condition, model, reason) in enumerate(self.routes[route], start=1):
            try:
                holds = True if condition is None else condition.evaluate(activation) is True
            except CelError as exc:
                call.routed = f"route {route!r}: rule {i} could not be evaluated ({exc})"
                return None
            if holds:
                why = f" ({reason})" if reason else ""
                call.routed = f"{route}: rule {i}{why} -> {model}"
                return model
        call.routed = f"route {route!r}: no rule holds for this call (add a rule without 'when')"
        return None

    def chain(self, name: str, *, without: Callable[[str], bool]) -> FallbackChain:
        """Model ``name`` and its ``fallback`` models, those ``without`` excludes (switched
        off) left out; the chain's targets are named after the declared models."""
        names = [n for n in [name, *self.declared[name].fallback] if not without(n)]
        return FallbackChain([Target(self.upstream(n), self.declared[n].model) for n in names])

    def chain_names(self, name: str) -> list[str]:
        return [name, *self.declared[name].fallback]

    # -- the reply cache -------------------------------------------------------------

    def cache_key(self, tenant: str, name: str, request: ChatRequest) -> str | None:
        """The cache key of a cacheable request of model ``name`` (None: not cacheable:
        the model has no ``cache:``, or the request streams, has tools, or is not at
        temperature 0)."""
        if self.declared[name].cache is None:
            return None
        if request.stream or request.tools or request.temperature != 0:
            return None
        seed = canonical_json(
            {"tenant": tenant, "model": name, "wire": request.wire, "request": request.to_body()}
        )
        return hashlib.sha256(seed.encode()).hexdigest()

    def cache_get(self, tenant: str, key: str, wire: Wire) -> CachedReply | None:
        now_us = int(self.clock().timestamp() * 1_000_000)
        with self.store.read() as conn:
            row = conn.execute(
                select(model_cache.c.reply).where(
                    model_cache.c.tenant == tenant,
                    model_cache.c.cache_key == key,
                    model_cache.c.expires_us > now_us,
                )
            ).first()
        if row is None:
            return None
        text = row[0]
        if self.vault is not None:
            try:
                text = self.vault.unseal(tenant, text)
            except VaultError:
                return None  # the tenant was shredded: its replies are gone, ask the model
        data = json.loads(text)
        usage = Usage(**data["usage"]) if data.get("usage") else None
        return CachedReply(
            ChatReply(
                body=data["body"],
                wire=wire,
                text=data["text"],
                tool_calls=(),
                finish_reason=data.get("finish_reason"),
                usage=usage,
                model=data.get("model"),
                route=Route("cache", data.get("model") or ""),
                raw=data["body"],
            ),
            Decimal(data["cost_usd"]) if data.get("cost_usd") is not None else None,
        )

    def cache_put(
        self, tenant: str, key: str, name: str, reply: ChatReply, cost: Decimal | None
    ) -> None:
        spec = self.declared[name].cache
        assert spec is not None
        now = self.clock()
        now_us = int(now.timestamp() * 1_000_000)
        value = canonical_json(
            {
                "body": reply.body,
                "text": reply.text,
                "finish_reason": reply.finish_reason,
                "usage": usage_json(reply.usage),
                "model": reply.model,
                "cost_usd": None if cost is None else str(cost),
            }
        )
        if self.vault is not None:
            # a reply repeats what the prompt held (names, addresses): sealed at rest, and
            # unreadable once the tenant is shredded; sealed before the write transaction
            # (a tenant's first seal makes its key, in a write of its own)
            value = self.vault.seal(tenant, value)
        row = {
            "tenant": tenant,
            "cache_key": key,
            "model": name,
            "reply": value,
            "created_us": now_us,
            "expires_us": now_us + int(spec.ttl.total_seconds() * 1_000_000),
        }
        with self.store.write(durable=False) as conn:
            conn.execute(
                delete(model_cache).where(
                    (model_cache.c.tenant == tenant) & (model_cache.c.cache_key == key)
                    | (model_cache.c.expires_us <= now_us)
                )
            )
            conn.execute(insert(model_cache).values(**row))

    def upstream(self, name: str) -> Upstream:
        """The upstream of model ``name`` on the running event loop (its connections
        belong to that loop)."""
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is None:
            found = self._clients[loop] = (new_client(), {})
        client, upstreams = found
        upstream = upstreams.get(name)
        if upstream is None:
            upstream = upstreams[name] = self._make(name, client)
        return upstream

    def _make(self, name: str, client: httpx.AsyncClient) -> Upstream:
        spec = self.declared[name]
        ref = spec.credential
        key = (lambda: self.secrets.mint(ref)) if ref is not None else None
        options: dict[str, Any] = {
            "name": name,
            "timeout": spec.timeout.total_seconds(),
            "max_retries": spec.retries,
            "client": client,
        }
        base_url = spec.base_url
        if base_url is not None and base_url.startswith("env:"):
            found = os.environ.get(base_url[4:], "")
            if not found.startswith(("http://", "https://")):
                raise UpstreamConfigError(
                    f"model {name!r}: base_url {base_url} is not set to an http(s) URL in "
                    "this process's environment"
                )
            base_url = found
        if spec.upstream == "anthropic":
            return AnthropicUpstream(base_url or "https://api.anthropic.com", key, **options)
        return OpenAIUpstream(base_url or "https://api.openai.com/v1", key, **options)

    async def aclose(self) -> None:
        """Close the HTTP clients of the running loop (others close with their loop)."""
        found = self._clients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[0].aclose()


def usage_json(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
    }


__all__ = [
    "ChatResult",
    "ChatStreamResult",
    "GovernedStream",
    "HeldStream",
    "ModelCall",
    "Models",
    "input_token_bound",
    "output_problem",
    "to_nusd",
    "usage_json",
]
